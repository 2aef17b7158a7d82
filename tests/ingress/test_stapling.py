"""The ingress staples, checked by real TLS clients: openssl s_client, curl, gnutls-cli."""

from __future__ import annotations

from ocsp_stapler.k8s.client import ApiClient
from support.backends import EchoBackend, expose, ingress_object, rule
from support.ingresses import IngressProcess, MakeSite, curl, ingress_path, s_client
from support.kube import wait_for
from support.pki import TestPKI


async def test_openssl_sees_a_good_staple_on_tls12_and_tls13(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    ingress: IngressProcess,
    backend: EchoBackend,
    site: MakeSite,
) -> None:
    await site("www.example.test", "www-tls")
    await expose(api, namespace, "echo", [backend.port])
    await api.create(
        ingress_path(namespace),
        ingress_object(namespace, "web", rules=[rule("www.example.test", "echo")],
                tls=[{"hosts": ["www.example.test"], "secretName": "www-tls"}]),
    )  # fmt: skip

    async def stapled() -> str | None:
        out = await s_client(ingress.https_port, "www.example.test", "-tls1_3")
        return out if "OCSP Response Status: successful" in out else None

    out = await wait_for(stapled, what="a stapled handshake")
    assert "Cert Status: good" in out
    assert "TLSv1.3" in out
    out12 = await s_client(ingress.https_port, "www.example.test", "-tls1_2")
    assert "OCSP Response Status: successful" in out12
    assert "Cert Status: good" in out12
    assert "Protocol  : TLSv1.2" in out12 or "TLSv1.2" in out12
    got = await curl(
        ingress.https_port, "www.example.test", "/hello", "--cert-status", ca=pki.path("root")
    )
    assert got.returncode == 0, got.stderr
    assert '"path": "/hello"' in got.stdout
