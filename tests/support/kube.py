"""Helpers for tests against the real API server: Secrets, waiting, watching."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ocsp_stapler.k8s.client import ApiClient, NotFound, resource_path

T = TypeVar("T")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextlib.asynccontextmanager
async def temporary_namespace(api: ApiClient) -> AsyncIterator[str]:
    """A namespace of a test's own, deleted after it (nothing finalizes it: no controllers)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await api.create(
        resource_path(api_version="v1", plural="namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    try:
        yield name
    finally:
        await api.delete(resource_path(api_version="v1", plural="namespaces", name=name))


def secret_path(namespace: str, name: str | None = None) -> str:
    return resource_path(api_version="v1", plural="secrets", namespace=namespace, name=name)


def tls_secret(
    name: str,
    namespace: str,
    *,
    crt: bytes | None,
    key: bytes = b"",
    annotations: dict[str, str] | None = None,
    extra: dict[str, bytes] | None = None,
    type_: str = "kubernetes.io/tls",
) -> dict[str, Any]:
    data = {"tls.key": b64(key)}
    if crt is not None:
        data["tls.crt"] = b64(crt)
    for k, v in (extra or {}).items():
        data[k] = b64(v)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "data": data,
    }


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def get_or_none(api: ApiClient, path: str) -> dict[str, Any] | None:
    try:
        return await api.get(path)
    except NotFound:
        return None


async def events_for(api: ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = await api.get(
        resource_path(api_version="v1", plural="events", namespace=namespace),
        fieldSelector=f"involvedObject.name={name},involvedObject.kind=Secret",
    )
    return list(listed.get("items", []))


async def event_reasons(api: ApiClient, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in await events_for(api, namespace, name)]


class SecretHistory:
    """Every version of every Secret in a namespace, as the watch delivers them."""

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.versions: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SecretHistory:
        listed = await self.api.get(secret_path(self.namespace))
        self.versions.extend(listed.get("items", []))
        rv = listed["metadata"]["resourceVersion"]
        started = asyncio.Event()

        async def follow() -> None:
            started.set()
            async for event in self.api.watch(secret_path(self.namespace), resource_version=rv):
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.versions.append(event["object"])

        self._task = asyncio.create_task(follow())
        await started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.3)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def of(self, name: str) -> list[dict[str, Any]]:
        return [v for v in self.versions if v["metadata"]["name"] == name]

    def assert_no_trace_of_kopf(self) -> None:
        for v in self.versions:
            meta = v["metadata"]
            assert not meta.get("finalizers"), f"finalizers on {meta['name']}: {meta['finalizers']}"
            kopf_keys = [k for k in meta.get("annotations", {}) if "kopf" in k]
            assert not kopf_keys, f"kopf annotations on {meta['name']}: {kopf_keys}"


async def lease_holder(api: ApiClient, namespace: str, name: str) -> str | None:
    """The Lease's holderIdentity (None: no Lease, or released)."""
    path = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                         namespace=namespace, name=name)  # fmt: skip
    lease = await get_or_none(api, path)
    return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")
