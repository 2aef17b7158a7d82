"""The guarded fetcher: limits and refusals for responders that misbehave or point inward.

A scripted loopback server plays the faults no real responder produces on purpose; the real
`openssl ocsp` responder sits behind it where a valid answer is needed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.queries import MAX_GET_LENGTH, get_request, http_requests
from ocsp_stapler.ocsp.responses import CertStatus
from ocsp_stapler.ocsp.stapling import obtain_staple
from ocsp_stapler.ocsp.transport import HttpRequest
from support.clocks import utcnow
from support.kube import events_for, get_or_none, wait_for
from support.operators import StartOperator
from support.responders import LOOPBACK_CIDRS, Handler, ScriptedServer, hang
from support.staples import ENABLED, create_secret, staple_of, staple_path

OCSP = "application/ocsp-response"
LOOPBACK = DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)


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
    settings = FetchSettings(connect_timeout=1, total_timeout=0.5, guard=LOOPBACK)
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
    async with HttpFetcher(FetchSettings(total_timeout=0.5, guard=LOOPBACK)) as fetch:
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
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[::169.254.169.254]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
        "http://127.0.0.1:9/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://0.0.0.0:9/",
        "http://[fe80::1]/",
        "http://100.100.100.200/",
        "ftp://127.0.0.1/ocsp",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
    ],
)
async def test_refused_destinations(url: str) -> None:
    """With the settings a deployment gets (loopback refused too)."""
    async with HttpFetcher(FetchSettings(connect_timeout=1, total_timeout=2)) as fetch:
        with pytest.raises(errors.DestinationRefused) as info:
            await fetch(HttpRequest(method="GET", url=url))
    assert info.value.retryable is False


async def test_the_guard_checks_resolved_addresses(scripted: ScriptedServer) -> None:
    """A name is judged by what it resolves to: localhost → 127.0.0.1, denied by default."""
    async with HttpFetcher(FetchSettings(connect_timeout=1, total_timeout=2)) as fetch:
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
            await fetch(HttpRequest(method="GET", url="http://192.0.2.1/"))
        with pytest.raises(errors.DestinationRefused, match="127.0.0.0/8"):
            await fetch(HttpRequest(method="GET", url=scripted.url + "/"))
    assert len(scripted.requests) == 1


async def test_a_broad_allow_list_does_not_open_loopback(scripted: ScriptedServer) -> None:
    broad = DestinationGuard.from_lists(allow=["0.0.0.0/0", "::/0"])
    async with HttpFetcher(FetchSettings(guard=broad, total_timeout=2)) as fetch:
        for url in (scripted.url, f"http://localhost:{scripted.port}"):
            with pytest.raises(errors.DestinationRefused, match="denied by default"):
                await fetch(HttpRequest(method="GET", url=url + "/"))
    assert scripted.requests == []


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


async def test_a_proxy_named_by_host_opens_only_itself(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy's own (host, port) is exempt from the guard, nothing else: with NO_PROXY
    covering the proxy's name, a certificate URL naming that host (on the proxy's port or any
    other) goes direct and meets the guard, so a proxy on a denied address opens no door."""

    async def proxy(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x30\x00", content_type=OCSP)

    scripted.handler = proxy
    victim = await ScriptedServer().start()
    victim.handler = proxy
    try:
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        settings = FetchSettings(proxy=f"http://localhost:{scripted.port}", total_timeout=2)
        async with HttpFetcher(settings) as fetch:
            through = await fetch(HttpRequest(method="GET", url="http://ocsp.ca.invalid/a"))
            assert through.status == 200  # the proxy itself is reachable by its name
            monkeypatch.setenv("NO_PROXY", "localhost")
            for port in (victim.port, scripted.port):
                with pytest.raises(errors.DestinationRefused, match="127.0.0.1"):
                    await fetch(HttpRequest(method="GET", url=f"http://localhost:{port}/x"))
        assert victim.requests == []
        assert scripted.requests == [("GET", "/a")]  # only the proxied request
    finally:
        await victim.stop()


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


# ---------------------------------------------------------------------------------------------
# URLs the guard must turn into a verdict or a valid request line

CONTROLS = ["\x00", "\r", "\n", "\t", "\x7f"]
# What a request line may carry as its target (RFC 3986 characters; "%" only in escapes).
REQUEST_TARGET = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})+")


@pytest.mark.parametrize("char", CONTROLS, ids=[f"{ord(c):#04x}" for c in CONTROLS])
@pytest.mark.parametrize("where", ["host", "path", "query"])
async def test_control_characters_never_reach_the_wire(
    scripted: ScriptedServer, fetch: HttpFetcher, char: str, where: str
) -> None:
    url = {
        "host": f"http://127.0.0{char}.1:{scripted.port}/",
        "path": f"{scripted.url}/MEow{char}X-Injected: 1",
        "query": f"{scripted.url}/?a=1{char}b",
    }[where]
    for method in ("GET", "POST"):
        with pytest.raises(errors.DestinationRefused, match="control characters") as info:
            await fetch(
                HttpRequest(method=method, url=url, body=b"0" if method == "POST" else None)
            )
        assert info.value.retryable is False
    assert scripted.requests == []


def raw_paths(scripted: ScriptedServer) -> list[str]:
    """Install a handler that answers 200 and records each request target as received."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        return web.Response(body=b"\x30\x00", content_type=OCSP)

    scripted.handler = record
    return seen


async def test_spaces_and_non_ascii_in_a_path_are_percent_encoded(
    scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    seen = raw_paths(scripted)
    resp = await fetch(HttpRequest(method="GET", url=scripted.url + "/o c s p/é/ME%2B%2F%3D?x=ÿ 1"))
    assert resp.status == 200
    assert seen == ["/o%20c%20s%20p/%C3%A9/ME%2B%2F%3D?x=%C3%BF%201"]


async def test_a_get_request_path_arrives_unchanged(
    ec_pki: TestPKI, scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    """The base64 of a GET request ('/', '+', '=' escaped by queries.get_request) is sent as
    built: re-encoding it would make another request (and miss HTTP caches)."""
    seen = raw_paths(scripted)
    der = b"\xfb\xff\xbe" * 20  # base64 full of '+' and '/'
    request = get_request(scripted.url + "/a b", der)
    assert request is not None
    await fetch(request)
    assert seen == ["/a%20b/" + request.url.rsplit("/", 1)[1]]
    assert "%2B" in seen[0]
    assert "%2F" in seen[0]


class RawServer:
    """Loopback HTTP/1.1 that answers every request with ``answer`` as raw bytes: a Location
    header no HTTP library would produce. Records each request line."""

    def __init__(self) -> None:
        self.answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        self.lines: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                self.lines.append(head.split(b"\r\n", 1)[0])
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def redirect(self, location: bytes, status: int = 302) -> None:
        self.answer = (
            f"HTTP/1.1 {status} Moved\r\n".encode()
            + b"Location: " + location + b"\r\nContent-Length: 0\r\n\r\n"
        )  # fmt: skip


@pytest.mark.parametrize(
    ("char", "refusal"),
    [
        ("\t", errors.DestinationRefused),
        ("\x7f", errors.DestinationRefused),
        ("\x01", errors.DestinationRefused),
        ("\x1b", errors.DestinationRefused),
        ("\x00", errors.FetchFailed),  # aiohttp's response parser refuses NUL in any header
    ],
)
async def test_a_redirect_with_control_characters_is_refused(
    scripted: ScriptedServer, fetch: HttpFetcher, char: str, refusal: type[errors.FetchFailed]
) -> None:
    async with RawServer() as raw:
        raw.redirect(f"{scripted.url}/a{char}b".encode())
        match = "Location has control characters" if refusal is errors.DestinationRefused else None
        with pytest.raises(refusal, match=match):
            await fetch(HttpRequest(method="GET", url=f"http://127.0.0.1:{raw.port}/start"))
    assert len(raw.lines) == 1
    assert scripted.requests == []  # the redirect was not followed


async def test_a_redirect_with_spaces_and_raw_bytes_is_followed_encoded(
    scripted: ScriptedServer, fetch: HttpFetcher
) -> None:
    seen = raw_paths(scripted)
    async with RawServer() as raw:
        raw.redirect(f"{scripted.url}/new place/".encode() + "é".encode() + b"\xff?q=a b")
        resp = await fetch(HttpRequest(method="GET", url=f"http://127.0.0.1:{raw.port}/start"))
    assert resp.status == 200
    assert seen == ["/new%20place/%C3%A9%FF?q=a%20b"]  # \xff: the byte as the header had it


@pytest.mark.parametrize(
    ("location", "why"),
    [
        (b"http://169.254.169.254/latest/", "169.254.0.0/16"),
        (b"http://[64:ff9b::a9fe:a9fe]/", "embedding 169.254.169.254"),
        (b"http://user@127.0.0.1/", "credentials"),
        (b"http://[zz]/", "not a URL"),  # urljoin objects first
        (b"http://h:99999/", "invalid port"),
        (b"http://\xc3\xa9.example/", "characters a host name cannot have"),
        (b"ftp://127.0.0.1/", "scheme 'ftp'"),
        (b"http://127.1/", "non-canonical IPv4"),
    ],
)
async def test_redirect_targets_pass_the_same_guard(
    fetch: HttpFetcher, location: bytes, why: str
) -> None:
    async with RawServer() as raw:
        raw.redirect(location)
        with pytest.raises(errors.DestinationRefused, match=why):
            await fetch(HttpRequest(method="GET", url=f"http://127.0.0.1:{raw.port}/"))
    assert len(raw.lines) == 1


# The fuzz: URLs built from parts, some fine, most odd; and Location headers of any bytes.
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
odd_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),  # surrogates and controls included
        st.sampled_from(list(" %/?#[]@:\\\"<>{}|^`'+=&;,é\x00\x7f\r\n\t")),
    ),
    max_size=12,
)


def url_parts(port: int) -> st.SearchStrategy[str]:
    # The plain forms weigh half or a third, so that many examples do reach the wire.
    schemes = st.one_of(
        st.just("http"), st.sampled_from(["HTTP", "https", "ftp", "", "h\x00ttp", "gopher"])
    )
    seps = st.one_of(st.just("://"), st.sampled_from([":/", ":", "//", ":\\\\", ":///"]))
    hosts = st.one_of(
        st.just(f"127.0.0.1:{port}"),
        st.sampled_from(
            [
                f"127.0.0.1:{port}",
                f"localhost:{port}",
                f"[::1]:{port}",
                f"[::ffff:127.0.0.1]:{port}",
                "169.254.169.254",
                "[64:ff9b::a9fe:a9fe]",
                "[2002:a9fe:a9fe::1]",
                "0.0.0.0",
                "[::]",
                "",
                "a b",
                "é.test",
                "[zz]",
                "[::1",
                "%41",
                "127.1",
                "2130706433",
                "0x7f.1",
                f"u@127.0.0.1:{port}",
                f"127.0.0.1:{port}0000",
                "127.0.0.1:",
                "127.0.0.1:-1",
                "[fe80::1%25lo]",
                f"127.0.0.1:{port}@[::1]",
                "[v7.x]",
            ]
        ),
        odd_text.map(lambda t: f"x y{t}"),  # never a valid host name: no DNS query goes out
    )
    segments = st.lists(odd_text, max_size=4).map("/".join)
    tail = st.one_of(st.just(""), odd_text.map(lambda t: "?" + t), odd_text.map(lambda t: "#" + t))
    return st.builds(
        lambda s, sep, h, p, t: f"{s}{sep}{h}/{p}{t}", schemes, seps, hosts, segments, tail
    )


def _run_fuzz(
    body: Callable[[asyncio.AbstractEventLoop, HttpFetcher, RawServer], None],
) -> list[bytes]:
    """A loop of the test's own (hypothesis drives examples synchronously), one loopback
    server, one fetcher (loopback allowed, so good URLs do reach the wire)."""
    loop = asyncio.new_event_loop()
    try:
        raw = loop.run_until_complete(RawServer().__aenter__())
        settings_ = FetchSettings(connect_timeout=1, total_timeout=2, guard=LOOPBACK)
        fetch = loop.run_until_complete(HttpFetcher(settings_).__aenter__())
        try:
            body(loop, fetch, raw)
        finally:
            loop.run_until_complete(fetch.__aexit__(None, None, None))
            loop.run_until_complete(raw.__aexit__())
    finally:
        loop.close()
    for line in raw.lines:  # every request that went out had a valid request line
        method, target, version = line.split(b" ")
        assert (method in (b"GET", b"POST"), version) == (True, b"HTTP/1.1"), line
        assert REQUEST_TARGET.fullmatch(target.decode("ascii")), line
    return raw.lines


def _verdict(loop: asyncio.AbstractEventLoop, fetch: HttpFetcher, request: HttpRequest) -> None:
    try:
        loop.run_until_complete(fetch(request))
    except errors.DestinationRefused as exc:
        if exc.retryable:
            raise AssertionError(f"a retryable refusal: {exc}") from None
    except errors.FetchFailed:
        pass  # anything else propagates and fails the test


def test_any_url_ends_in_an_answer_or_fetch_failed() -> None:
    def body(loop: asyncio.AbstractEventLoop, fetch: HttpFetcher, raw: RawServer) -> None:
        @FUZZ
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            url = data.draw(url_parts(raw.port))
            method = data.draw(st.sampled_from(["GET", "POST"]))
            _verdict(loop, fetch, HttpRequest(method=method, url=url, body=b"0"))

        check()

    assert len(_run_fuzz(body)) >= 5  # not only refusals: odd paths did go out, encoded


def test_any_location_ends_in_an_answer_or_fetch_failed() -> None:
    def body(loop: asyncio.AbstractEventLoop, fetch: HttpFetcher, raw: RawServer) -> None:
        base = f"http://127.0.0.1:{raw.port}".encode()
        location = st.one_of(
            st.binary(max_size=40),
            st.builds(lambda a, b: a + b, st.sampled_from([base, b"/", b"//", b"http://"]), st.binary(max_size=30)),
            url_parts(raw.port).map(lambda u: u.encode("utf-8", "surrogatepass")),
        ).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))  # fmt: skip

        @FUZZ
        @given(location=location, status=st.sampled_from([301, 302, 303, 307, 308]))
        def check(location: bytes, status: int) -> None:
            raw.redirect(location, status)
            _verdict(loop, fetch, HttpRequest(method="GET", url=base.decode() + "/start"))

        check()

    lines = _run_fuzz(body)
    assert len(set(lines)) >= 5  # redirects were followed to many targets


# ---------------------------------------------------------------------------------------------
# End to end: the real API server and operator


async def _refusal(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The DestinationRefused Event on the Secret, once there."""

    async def probe() -> dict[str, Any] | None:
        events = await events_for(api, namespace, name)
        return next((e for e in events if e["reason"] == "DestinationRefused"), None)

    return await wait_for(probe, timeout=30, what=f"a DestinationRefused Event on {name}")


async def _ready_reason(api: ApiClient, namespace: str, name: str) -> str | None:
    obj = await get_or_none(api, staple_path(namespace, name))
    conditions = (obj or {}).get("status", {}).get("conditions", [])
    return next((c["reason"] for c in conditions if c["type"] == "Ready"), None)


@pytest.mark.parametrize("char", ["\x01", "\x7f", "\x00"], ids=["0x01", "0x7f", "0x00"])
async def test_a_responder_url_annotation_with_a_control_character(
    api: ApiClient,
    namespace: str,
    ec_pki: TestPKI,
    scripted: ScriptedServer,
    start_operator: StartOperator,
    char: str,
) -> None:
    """Loopback is allowed here (the test default), so only the control character stands
    between the URL and the scripted server."""
    seen = raw_paths(scripted)
    op = await start_operator()
    url = f"{scripted.url}/a{char}b"
    annotations = {**ENABLED, "ocsp-stapler.dev/responder-url": url}
    await create_secret(
        api, namespace, "ctl", ec_pki, ec_pki.leaf(ocsp_urls=[]), annotations=annotations
    )
    event = await _refusal(api, namespace, "ctl")
    assert "control characters" in event["message"]
    await op.settle()
    assert await _ready_reason(api, namespace, "ctl") == "DestinationRefused"
    assert op.alive()
    assert await staple_of(api, namespace, "ctl") is None
    assert seen == []
    assert scripted.requests == []


@pytest.mark.parametrize(
    ("aia", "range_"),
    [
        ("http://[64:ff9b::a9fe:a9fe]/", "169.254.0.0/16"),
        ("http://127.0.0.1:{port}/", "127.0.0.0/8"),
    ],
    ids=["nat64-metadata", "loopback"],
)
async def test_aia_urls_pointing_inward_are_refused_by_default(
    api: ApiClient,
    namespace: str,
    ec_pki: TestPKI,
    scripted: ScriptedServer,
    start_operator: StartOperator,
    aia: str,
    range_: str,
) -> None:
    op = await start_operator(responder_allow_cidrs=())  # what a deployment gets
    leaf = ec_pki.leaf(ocsp_urls=[aia.format(port=scripted.port)])
    await create_secret(api, namespace, "inward", ec_pki, leaf, annotations=ENABLED)
    event = await _refusal(api, namespace, "inward")
    assert range_ in event["message"]
    await op.settle()
    assert await _ready_reason(api, namespace, "inward") == "DestinationRefused"
    assert op.alive()
    assert await staple_of(api, namespace, "inward") is None
    assert scripted.requests == []  # refused before any connection
