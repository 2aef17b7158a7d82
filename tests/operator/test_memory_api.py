"""The simulation's in-memory API answers the operator's calls as kube-apiserver does.

The same sequence of calls (the patches ``secretpatches`` builds, with their ``test``
preconditions, a stale merge patch, a create of an existing name, a read of a missing one)
goes to the real API server and to ``MemoryApi``; the answers (the error class, or the
data and annotations after the write, and whether the resourceVersion moved) must be the
same. The simulation's results are only worth this agreement.
"""

from __future__ import annotations

from typing import Any

import pytest
from simulation.memory import MemoryApi

from ocsp_stapler.controller import secretpatches
from ocsp_stapler.controller.bodies import SecretView
from ocsp_stapler.k8s.client import Api, ApiClient, ApiError
from ocsp_stapler.names import STAPLE_KEY
from support.kube import b64, secret_path, tls_secret
from support.staples import ENABLED

pytestmark = pytest.mark.cluster


async def _script(api: Api, namespace: str) -> list[Any]:
    """Every answer of one sequence of calls: a dict of what matters, or the error class."""
    answers: list[Any] = []
    last_version: list[str] = []

    async def call(coro: Any) -> dict[str, Any] | None:
        try:
            body = await coro
        except ApiError as exc:
            answers.append(type(exc).__name__)
            return None
        version = body.get("metadata", {}).get("resourceVersion")
        moved = bool(last_version) and version != last_version[-1]
        last_version.append(version)
        answers.append({
            "data": dict(body.get("data") or {}),
            "annotations": dict(body.get("metadata", {}).get("annotations") or {}),
            "version moved": moved,
        })  # fmt: skip
        return body

    path = secret_path(namespace, "site")
    created = await call(
        api.create(
            secret_path(namespace),
            tls_secret("site", namespace, crt=b"CERT", key=b"KEY", annotations=ENABLED),
        )
    )
    await call(
        api.create(secret_path(namespace), tls_secret("site", namespace, crt=b"X", key=b"Y"))
    )
    assert created is not None
    view = SecretView.of(created, STAPLE_KEY)
    write = secretpatches.write_staple(
        view, staple_key=STAPLE_KEY, staple_b64=b64(b"STAPLE"), cert_sha256="ab" * 32,
        issuer_b64=b64(b"ISSUER"),
    )  # fmt: skip
    written = await call(api.patch(path, write, patch_type="json"))
    await call(api.patch(path, write, patch_type="json"))  # the same again: no new version
    assert written is not None
    # A removal judged against the Secret before the write: the staple it would remove was
    # not there then, so only the test on tls.crt is sent, which passes: nothing changes.
    stale = SecretView.of(created, STAPLE_KEY)
    remove_nothing = secretpatches.remove_staple(stale, staple_key=STAPLE_KEY)
    await call(api.patch(path, remove_nothing, patch_type="json"))
    rotated = {**written, "data": {**written["data"], "tls.crt": b64(b"NEWCERT")}}
    await call(api.patch(path, {"data": rotated["data"]}))  # cert-manager renews
    # A write judged against the old certificate: its test on tls.crt fails, nothing changes.
    await call(api.patch(path, write, patch_type="json"))
    current = SecretView.of(await api.get(path), STAPLE_KEY)
    await call(
        api.patch(
            path, secretpatches.remove_staple(current, staple_key=STAPLE_KEY), patch_type="json"
        )
    )
    await call(api.patch(path, {"metadata": {"resourceVersion": "1"}, "data": {"x": b64(b"y")}}))
    await call(api.get(secret_path(namespace, "missing")))
    await call(api.delete(path))
    await call(api.delete(path))
    return answers


async def test_the_memory_api_answers_the_operator_as_the_api_server_does(
    api: ApiClient, namespace: str
) -> None:
    real = await _script(api, namespace)
    memory = await _script(MemoryApi(), namespace)
    # Deletion answers differ in shape (a Status, or the object), not in meaning.
    assert memory[:-2] == real[:-2]
    assert [isinstance(a, str) for a in memory[-2:]] == [isinstance(a, str) for a in real[-2:]]
    assert real[1] == "Conflict"  # the script does reach the cases it names
    assert "Invalid" in real
    assert real.count("NotFound") == 2
