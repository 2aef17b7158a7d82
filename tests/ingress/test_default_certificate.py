"""Clients without SNI (and with a name no Ingress serves) get the default certificate, as
ingress-nginx's --default-ssl-certificate: with `ingress.defaultCertificate` a TLS Secret that
no Ingress names, stapled like any other host and hot-reloaded; without one, a self-signed
certificate and no staple. Checked by `openssl s_client -noservername -status`."""

from __future__ import annotations

from ocsp_stapler.k8s.client import ApiClient
from support.ingress_fixtures import Published
from support.ingresses import MakeSite, StartIngress, put_staple, s_client, staple_in
from support.kube import wait_for

HOST = "www.example.test"
DEFAULT_HOST = "default.example.test"


def _subject_cn(out: str, cn: str) -> bool:
    """Whether the certificate s_client printed has common name ``cn``."""
    subjects = [line for line in out.splitlines() if line.startswith("subject=")]
    return any(s.replace(" = ", "=").endswith(f"CN={cn}") for s in subjects)


async def test_clients_without_sni_get_the_stapled_default_certificate(
    api: ApiClient, namespace: str, start: StartIngress, site: MakeSite, published: Published,
) -> None:  # fmt: skip
    await site(DEFAULT_HOST, "fallback-tls")  # named by no Ingress
    await published(HOST, "www-tls")
    ingress = await start(default_certificate=f"{namespace}/fallback-tls")

    async def default_stapled(*extra: str) -> str | None:
        out = await s_client(ingress.https_port, None, *extra)
        return out if _subject_cn(out, DEFAULT_HOST) and staple_in(out) else None

    for version in ("-tls1_3", "-tls1_2"):
        out = await wait_for(lambda v=version: default_stapled(v),  # type: ignore[misc]
                             what=f"the stapled default certificate ({version})")  # fmt: skip
        assert staple_in(out) == "good"
    unknown = await s_client(ingress.https_port, "nobody.example.test")
    assert _subject_cn(unknown, DEFAULT_HOST)
    assert staple_in(unknown) == "good"
    own = await s_client(ingress.https_port, HOST)
    assert _subject_cn(own, HOST)
    assert staple_in(own) == "good"

    # Hot reload: the default Secret's staple removed, the no-SNI handshake carries none.
    await put_staple(api, namespace, "fallback-tls", None)

    async def unstapled() -> bool | None:
        out = await s_client(ingress.https_port, None)
        return (_subject_cn(out, DEFAULT_HOST) and staple_in(out) is None) or None

    await wait_for(unstapled, what="the default certificate without its removed staple")


async def test_without_a_default_certificate_no_sni_gets_the_self_signed_one(
    start: StartIngress, published: Published,
) -> None:  # fmt: skip
    await published(HOST, "www-tls")
    ingress = await start()
    await wait_for(lambda: _routed(ingress.https_port), what="the ingress to serve its site")
    out = await s_client(ingress.https_port, None)
    assert _subject_cn(out, "ocsp-stapler ingress default certificate"), out
    assert staple_in(out) is None


async def _routed(port: int) -> bool | None:
    return staple_in(await s_client(port, HOST)) == "good" or None
