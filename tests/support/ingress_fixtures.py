"""Fixtures for the ingress (registered for every test by the root conftest): its IngressClass,
a loopback backend, ingress processes watching the test's namespace, and TLS sites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from devcluster.controlplane import ControlPlane
from devcluster.pki import Issued, TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient, Conflict
from support.backends import EchoBackend, expose
from support.ingresses import (
    IngressProcess,
    MakeSite,
    StartIngress,
    fetch_staple,
    publish,
    start_ingress,
)
from support.kube import secret_path, tls_secret


@pytest.fixture(scope="session")
def ingress_class(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> None:
    manifest = Path(tmp_path_factory.mktemp("ingressclass")) / "class.yaml"
    manifest.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: ocsp-stapler\n"
        "spec:\n  controller: ocsp-stapler.dev/ingress\n"
    )
    cluster.kubectl("apply", "-f", str(manifest))


@pytest.fixture
async def backend() -> AsyncIterator[EchoBackend]:
    b = await EchoBackend().start()
    yield b
    await b.stop()


@pytest.fixture
async def start(
    cluster: ControlPlane, ingress_class: None, namespace: str, tmp_path: Path
) -> AsyncIterator[StartIngress]:
    """Start ingress processes for this test's namespace (settings through the environment)."""
    started: list[IngressProcess] = []

    async def run(
        *, workers: int = 2, more_namespaces: tuple[str, ...] = (), **env: str
    ) -> IngressProcess:
        proc = start_ingress(
            kubeconfig=cluster.kubeconfig,
            namespace=namespace,
            log=tmp_path / f"ingress-{len(started)}.log",
            workers=workers,
            env={f"OCSP_STAPLER_{k.upper()}": v for k, v in env.items()},
            more_namespaces=more_namespaces,
        )
        started.append(proc)
        await proc.ready()
        return proc

    yield run
    for proc in started:
        await proc.stop()


@pytest.fixture
async def ingress(start: StartIngress) -> IngressProcess:
    return await start()


@pytest.fixture
def site(api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder) -> MakeSite:
    """A TLS Secret for ``host`` (with a real staple unless told otherwise)."""

    async def make(
        host: str, secret: str, *, staple: bool = True, must_staple: bool = False
    ) -> tuple[Issued, bytes | None]:
        leaf = pki.leaf(host, ocsp_urls=[responder.url], must_staple=must_staple)
        der = await fetch_staple(pki, leaf) if staple else None
        extra = {"tls.ocsp-staple": der} if der else None
        body: dict[str, Any] = tls_secret(
            secret, namespace, crt=pki.chain_pem(leaf), key=leaf.key_pem, extra=extra
        )
        try:
            await api.create(secret_path(namespace), body)
        except Conflict:
            await api.replace(secret_path(namespace, secret), body)
        return leaf, der

    return make


Published = Callable[..., Awaitable[tuple[Issued, bytes | None]]]


@pytest.fixture
def published(api: ApiClient, namespace: str, site: MakeSite, backend: EchoBackend) -> Published:
    """A site (TLS Secret) routed by an Ingress to the echo backend: the usual test setup."""
    exposed: list[bool] = []

    async def make(host: str, secret: str, **site_options: Any) -> tuple[Issued, bytes | None]:
        made = await site(host, secret, **site_options)
        if not exposed:
            await expose(api, namespace, "echo", [backend.port])
            exposed.append(True)
        await publish(api, namespace, host=host, secret=secret, service="echo")
        return made

    return make
