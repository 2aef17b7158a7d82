"""Helpers for operator tests: creating opted-in Secrets, reading staples and status."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

from devcluster.pki import Issued, TestPKI

from ocsp_stapler.k8s.client import ApiClient, resource_path
from support.kube import get_or_none, secret_path, tls_secret, wait_for

ENABLED = {"ocsp-stapler.dev/enabled": "true"}


def staple_path(namespace: str, name: str) -> str:
    return resource_path(
        api_version="ocsp-stapler.dev/v1alpha1",
        plural="ocspstaples",
        namespace=namespace,
        name=name,
    )


async def create_secret(
    api: ApiClient, namespace: str, name: str, pki: TestPKI, leaf: Issued, **kw: Any
) -> dict[str, Any]:
    body = tls_secret(name, namespace, crt=pki.chain_pem(leaf), key=leaf.key_pem, **kw)
    return await api.create(secret_path(namespace), body)


async def staple_of(api: ApiClient, namespace: str, name: str) -> bytes | None:
    body = await get_or_none(api, secret_path(namespace, name))
    if body is None or "tls.ocsp-staple" not in body.get("data", {}):
        return None
    return base64.b64decode(body["data"]["tls.ocsp-staple"])


def openssl_verifies(pki: TestPKI, leaf: Issued, der: bytes, tmp_path: Path) -> str:
    (tmp_path / "s.der").write_bytes(der)
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    out = subprocess.run(
        ["openssl", "ocsp", "-respin", str(tmp_path / "s.der"), "-CAfile", str(pki.path("root")),
         "-verify_other", str(pki.path("intermediate")), "-issuer", str(pki.path("intermediate")),
         "-cert", str(tmp_path / "leaf.pem")],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert "Response verify OK" in out.stdout + out.stderr, out.stderr
    return out.stdout.split(":", 1)[1].split()[0]  # good / revoked / unknown


async def status_with(
    api: ApiClient, namespace: str, name: str, field: str, value: Any = None
) -> dict[str, Any] | None:
    obj = await get_or_none(api, staple_path(namespace, name))
    if not obj or field not in obj.get("status", {}):
        return None
    if value is not None and obj["status"][field] != value:
        return None
    return obj


async def gone(api: ApiClient, path: str) -> bool:
    return await get_or_none(api, path) is None


async def stapled_secret(
    api: ApiClient, namespace: str, name: str, pki: TestPKI, url: str
) -> tuple[Issued, bytes]:
    """Create an opted-in Secret for a new leaf answered at ``url``; wait for its staple."""
    leaf = pki.leaf(ocsp_urls=[url])
    await create_secret(api, namespace, name, pki, leaf, annotations=ENABLED)
    return leaf, await wait_for(lambda: staple_of(api, namespace, name), what=f"a staple in {name}")
