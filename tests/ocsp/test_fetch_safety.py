"""The guarded fetcher: limits and refusals for responders that misbehave or point inward.

A scripted loopback server plays the faults no real responder produces on purpose; the real
`openssl ocsp` responder sits behind it where a valid answer is needed.
"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.queries import MAX_GET_LENGTH, get_request, http_requests
from ocsp_stapler.ocsp.responses import CertStatus
from ocsp_stapler.ocsp.stapling import obtain_staple
from ocsp_stapler.ocsp.transport import HttpRequest
from support.clocks import utcnow
from support.responders import Handler, ScriptedServer, hang

OCSP = "application/ocsp-response"


async def staple_via(pki: TestPKI, url: str, fetch: HttpFetcher) -> CertStatus:
    leaf = pki.leaf(ocsp_urls=[url])
    got = await obtain_staple(assemble_chain(pki.chain_pem(leaf)), fetch=fetch, clock=utcnow)
    return got.staple.status


def relay_to(responder: OpenSSLResponder, *, refuse_get: bool = False) -> Handler:
    """A handler that forwards to the real responder (to wrap it in faults)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if refuse_get and request.method == "GET":
            return web.Response(status=405)
        proc = await asyncio.create_subprocess_exec(
            "curl", "-s", "--max-time", "5", "-X", request.method,
            "-H", "Content-Type: application/ocsp-request",
            "--data-binary", "@-", f"{responder.url}{request.path_qs}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        body = await request.read() if request.method == "POST" else b""
        out, _ = await proc.communicate(body)
        return web.Response(body=out, content_type=OCSP)

    return handler


async def test_get_refused_falls_back_to_post(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    with OpenSSLResponder(ec_pki) as real:
        scripted.handler = relay_to(real, refuse_get=True)
        assert await staple_via(ec_pki, scripted.url, fetch) is CertStatus.GOOD
    assert [m for m, _ in scripted.requests] == ["GET", "POST"]


def test_long_requests_go_by_post() -> None:
    url = "http://ocsp.example.test/"
    short = http_requests(url, b"\x30" * 60)
    assert [r.method for r in short] == ["GET", "POST"]
    assert short[0].url.startswith("http://ocsp.example.test/MDAw")
    long_der = b"\xfb" * (MAX_GET_LENGTH)  # base64 of 0xfb bytes is full of '+' and '/'
    assert get_request(url, long_der) is None
    assert [r.method for r in http_requests(url, long_der)] == ["POST"]
    post = http_requests(url, long_der)[0]
    assert post.body == long_der
    assert ("Content-Type", "application/ocsp-request") in post.headers


async def test_a_hanging_responder_times_out(ec_pki: TestPKI, scripted: ScriptedServer) -> None:
    scripted.handler = hang
    settings = FetchSettings(connect_timeout=1, total_timeout=0.5)
    async with HttpFetcher(settings) as fetch:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(errors.FetchFailed, match="no complete answer within 0.5 s"):
            await staple_via(ec_pki, scripted.url, fetch)
        assert loop.time() - start < 5  # GET timed out; no POST retry after a timeout


async def test_a_trickling_body_is_cut_by_the_total_timeout(
    ec_pki: TestPKI, scripted: ScriptedServer
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": OCSP})
        await resp.prepare(request)
        for _ in range(200):
            await resp.write(b"\x30")
            await asyncio.sleep(0.05)
        return resp

    scripted.handler = trickle
    async with HttpFetcher(FetchSettings(total_timeout=0.5)) as fetch:
        with pytest.raises(errors.FetchFailed, match="no complete answer"):
            await staple_via(ec_pki, scripted.url, fetch)


@pytest.mark.parametrize("declared", [True, False])
async def test_an_oversized_body_is_refused(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher, declared: bool
) -> None:
    big = b"\x30" * (64 * 1024 + 1)

    async def huge(request: web.Request) -> web.StreamResponse:
        if declared:
            return web.Response(body=big, content_type=OCSP)
        resp = web.StreamResponse(headers={"Content-Type": OCSP})  # chunked: no length
        await resp.prepare(request)
        for i in range(0, len(big), 8192):
            await resp.write(big[i : i + 8192])
        return resp

    scripted.handler = huge
    with pytest.raises(errors.FetchFailed, match="exceeds 65536"):
        await staple_via(ec_pki, scripted.url, fetch)


async def test_a_body_that_is_not_ocsp(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"<html>hello</html>", content_type=OCSP)

    scripted.handler = html
    with pytest.raises(errors.ResponseMalformed, match="not an OCSP response"):
        await staple_via(ec_pki, scripted.url, fetch)


async def test_the_wrong_content_type(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(text="0")

    scripted.handler = text
    with pytest.raises(errors.FetchFailed, match="content type 'text/plain'"):
        await staple_via(ec_pki, scripted.url, fetch)


async def test_a_same_scheme_redirect_is_followed(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    with OpenSSLResponder(ec_pki) as real:

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(real.url + request.path_qs)

        scripted.handler = redirect
        assert await staple_via(ec_pki, scripted.url, fetch) is CertStatus.GOOD


async def test_redirect_limits(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    async def loop_forever(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/again{len(scripted.requests)}")

    scripted.handler = loop_forever
    with pytest.raises(errors.FetchFailed, match="more than 3 redirects"):
        await fetch(HttpRequest(method="GET", url=scripted.url + "/start"))
    assert len(scripted.requests) == 4  # the first request and three redirects, no more

    async def to_https(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"https://127.0.0.1:{scripted.port}/x")

    scripted.handler = to_https
    with pytest.raises(errors.DestinationRefused, match="redirect from http to https refused"):
        await fetch(HttpRequest(method="GET", url=scripted.url + "/"))

    async def to_metadata(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    scripted.handler = to_metadata
    with pytest.raises(errors.DestinationRefused, match="169.254.0.0/16"):
        await fetch(HttpRequest(method="GET", url=scripted.url + "/"))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://100.100.100.200/",
        "ftp://127.0.0.1/ocsp",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
    ],
)
async def test_refused_destinations(fetch: HttpFetcher, url: str) -> None:
    with pytest.raises(errors.DestinationRefused) as info:
        await fetch(HttpRequest(method="GET", url=url))
    assert info.value.retryable is False


async def test_the_guard_checks_resolved_addresses(scripted: ScriptedServer) -> None:
    """A name is judged by what it resolves to: localhost → 127.0.0.1, denied here."""
    guard = DestinationGuard.from_lists(deny=["127.0.0.0/8", "::1/128"])
    async with HttpFetcher(FetchSettings(guard=guard)) as fetch:
        with pytest.raises(errors.DestinationRefused, match="127.0.0.1 is in the denied range"):
            await fetch(HttpRequest(method="GET", url=f"http://localhost:{scripted.port}/"))
    assert scripted.requests == []  # refused before connecting


async def test_an_allow_list_is_exclusive(scripted: ScriptedServer) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x30\x00", content_type=OCSP)

    scripted.handler = ok
    only_loopback = DestinationGuard.from_lists(allow=["127.0.0.0/8"])
    async with HttpFetcher(FetchSettings(guard=only_loopback)) as fetch:
        assert (await fetch(HttpRequest(method="GET", url=scripted.url + "/"))).status == 200
    elsewhere = DestinationGuard.from_lists(allow=["10.0.0.0/8"])
    async with HttpFetcher(FetchSettings(guard=elsewhere)) as fetch:
        with pytest.raises(errors.DestinationRefused, match="outside the allowed ranges"):
            await fetch(HttpRequest(method="GET", url=scripted.url + "/"))


def test_bad_cidrs_are_named() -> None:
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        DestinationGuard.from_lists(deny=["10.0.0.0/33"])


async def test_an_explicit_proxy_is_used_and_no_proxy_honoured(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_hosts: list[str] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        seen_hosts.append(request.host)
        return web.Response(body=b"\x30\x00", content_type=OCSP)

    scripted.handler = proxy
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with HttpFetcher(FetchSettings(proxy=scripted.url)) as fetch:
        resp = await fetch(HttpRequest(method="GET", url="http://ocsp.ca.invalid/abc"))
        assert resp.status == 200
        assert seen_hosts == ["ocsp.ca.invalid"]
        monkeypatch.setenv("NO_PROXY", "ocsp.ca.invalid")
        with pytest.raises(errors.FetchFailed):  # direct now: the name does not resolve
            await fetch(HttpRequest(method="GET", url="http://ocsp.ca.invalid/abc"))
        assert seen_hosts == ["ocsp.ca.invalid"]


async def test_environment_proxy(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def proxy(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x30\x00", content_type=OCSP)

    scripted.handler = proxy
    monkeypatch.setenv("HTTP_PROXY", scripted.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with HttpFetcher() as fetch:
        assert (
            await fetch(HttpRequest(method="GET", url="http://ocsp.ca.invalid/x"))
        ).status == 200
    assert len(scripted.requests) == 1


async def test_missing_issuer_is_downloaded_from_ca_issuers(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    der = ec_pki.intermediate.cert.public_bytes(serialization.Encoding.DER)

    async def issuer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=der, content_type="application/pkix-cert")

    scripted.handler = issuer
    with OpenSSLResponder(ec_pki) as real:
        leaf = ec_pki.leaf(ocsp_urls=[real.url], ca_issuer_urls=[scripted.url + "/int.crt"])
        chain = assemble_chain(leaf.pem)  # the leaf alone: no intermediate in tls.crt
        assert chain.issuer is None
        got = await obtain_staple(chain, fetch=fetch, clock=utcnow)
        assert got.staple.status is CertStatus.GOOD
        assert got.issuer == ec_pki.intermediate.cert


async def test_a_wrong_certificate_at_ca_issuers_is_not_trusted(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    pem = ec_pki.stranger.pem

    async def wrong(request: web.Request) -> web.StreamResponse:
        return web.Response(body=pem, content_type="application/x-pem-file")

    scripted.handler = wrong
    leaf = ec_pki.leaf(ocsp_urls=["http://127.0.0.1:9/"], ca_issuer_urls=[scripted.url + "/x"])
    with pytest.raises(errors.IssuerNotFound, match="no certificate there signed the leaf"):
        await obtain_staple(assemble_chain(leaf.pem), fetch=fetch, clock=utcnow)


async def test_no_issuer_anywhere_is_final(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    leaf = ec_pki.leaf(ocsp_urls=["http://127.0.0.1:9/"])
    with pytest.raises(errors.IssuerNotFound) as info:
        await obtain_staple(assemble_chain(leaf.pem), fetch=fetch, clock=utcnow)
    assert info.value.retryable is False
