"""Routing and the reverse proxy: hosts, paths, endpoints, errors, limits, redirects, drain."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path

from devcluster.pki import TestPKI

from ocsp_stapler.k8s.client import ApiClient
from support.backends import EchoBackend, RawBackend, expose, ingress_object, rule, set_endpoints
from support.ingress_fixtures import Published
from support.ingresses import IngressProcess, MakeSite, StartIngress, curl, ingress_path, publish
from support.kube import wait_for
from support.tls_by_hand import hand_tls

HOST = "shop.example.test"


async def route_ok(
    ingress: IngressProcess, pki: TestPKI, host: str = HOST, path: str = "/"
) -> dict[str, object] | None:
    got = await curl(ingress.https_port, host, path, ca=pki.path("root"))
    if got.returncode != 0 or not got.stdout.startswith("{"):
        return None
    return dict(json.loads(got.stdout))


async def status_of(ingress: IngressProcess, pki: TestPKI, host: str, path: str = "/") -> int:
    # -k: some of these hosts are deliberately not covered by any certificate
    got = await curl(ingress.https_port, host, path, "-k", "-o", "/dev/null", "-w", "%{http_code}")
    assert got.returncode == 0, got.stderr
    return int(got.stdout)


async def raw_https(
    port: int, host: str, request: bytes, ca: Path, *, read_timeout: float = 10
) -> bytes:
    """Send raw bytes over TLS (for requests curl refuses to make) and read the answer."""
    ctx = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


async def test_hosts_and_paths(
    api: ApiClient, namespace: str, pki: TestPKI, ingress: IngressProcess, site: MakeSite
) -> None:
    backends = {
        n: await EchoBackend(n).start() for n in ("exact", "prefix", "wild", "root", "impl")
    }
    try:
        for name, b in backends.items():
            await expose(api, namespace, name, [b.port])
        await site(HOST, "shop-tls", staple=False)
        await site("*.example.test", "wild-tls", staple=False)
        await api.create(
            ingress_path(namespace),
            ingress_object(
                namespace,
                "paths",
                rules=[
                    {"host": HOST, "http": {"paths": [
                        _path("/api/v1", "Exact", "exact"),
                        _path("/api", "Prefix", "prefix"),
                        _path("/static", "ImplementationSpecific", "impl"),
                        _path("/", "Prefix", "root"),
                    ]}},
                    rule("*.example.test", "wild"),
                ],
                tls=[{"hosts": [HOST], "secretName": "shop-tls"},
                     {"hosts": ["*.example.test"], "secretName": "wild-tls"}],
            ),
        )  # fmt: skip
        await wait_for(lambda: route_ok(ingress, pki), what="routes")
        cases = {
            (HOST, "/api/v1"): "exact",
            (HOST, "/api/v1/users"): "prefix",  # Exact does not match deeper paths
            (HOST, "/api"): "prefix",
            (HOST, "/api/"): "prefix",
            (HOST, "/apiary"): "root",  # Prefix matches whole path elements only
            (HOST, "/static/app.js"): "impl",
            (HOST, "/?q=1"): "root",
            ("cart.example.test", "/x"): "wild",
        }
        for (host, path), expected in cases.items():
            got = await route_ok(ingress, pki, host, path)
            assert got is not None, (host, path)
            assert got["backend"] == expected, (host, path, got)
        assert (
            await status_of(ingress, pki, "a.b.example.test", "/") == 404
        )  # wildcard covers one label
    finally:
        for b in backends.values():
            await b.stop()


def _path(path: str, path_type: str, service: str) -> dict[str, object]:
    return {
        "path": path,
        "pathType": path_type,
        "backend": {"service": {"name": service, "port": {"name": "http"}}},
    }


async def test_round_robin_over_ready_endpoints(
    api: ApiClient, namespace: str, pki: TestPKI, ingress: IngressProcess, site: MakeSite
) -> None:
    one, two = await EchoBackend("one").start(), await EchoBackend("two").start()
    try:
        await site(HOST, "shop-tls", staple=False)
        await expose(api, namespace, "pool", [one.port, two.port])
        await publish(api, namespace, host=HOST, secret="shop-tls", service="pool")
        await wait_for(lambda: route_ok(ingress, pki), what="route")
        seen = [(await route_ok(ingress, pki) or {}).get("backend") for _ in range(6)]
        assert set(seen) == {"one", "two"}
        await set_endpoints(api, namespace, "pool", [one.port])  # "two" goes away

        async def only_one() -> bool:
            answers = {(await route_ok(ingress, pki) or {}).get("backend") for _ in range(4)}
            return answers == {"one"}

        await wait_for(only_one, what="the endpoint change")
    finally:
        await one.stop()
        await two.stop()


async def test_error_statuses(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    start: StartIngress,
    site: MakeSite,
    backend: EchoBackend,
) -> None:
    ingress = await start(upstream_timeout_seconds="1")
    await site(HOST, "shop-tls", staple=False)
    await expose(api, namespace, "echo", [backend.port])
    await expose(api, namespace, "refused", [_unused_port()])
    await expose(api, namespace, "nobody", [])
    await api.create(
        ingress_path(namespace),
        ingress_object(
            namespace,
            "errors",
            rules=[{"host": HOST, "http": {"paths": [
                _path("/refused", "Prefix", "refused"),
                _path("/nobody", "Prefix", "nobody"),
                _path("/", "Prefix", "echo"),
            ]}}],
            tls=[{"hosts": [HOST], "secretName": "shop-tls"}],
        ),
    )  # fmt: skip
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    assert await status_of(ingress, pki, "other.test", "/") == 404
    assert await status_of(ingress, pki, HOST, "/refused") == 502
    assert await status_of(ingress, pki, HOST, "/nobody") == 503
    started = time.monotonic()
    assert await status_of(ingress, pki, HOST, "/slow?s=5") == 504
    assert time.monotonic() - started < 4


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_bodies_keepalive_and_streaming(
    pki: TestPKI, ingress: IngressProcess, published: Published, tmp_path: Path,
) -> None:  # fmt: skip
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 3_000_000)
    got = await curl(
        ingress.https_port, HOST, "/upload", "--data-binary", f"@{big}", ca=pki.path("root")
    )
    assert json.loads(got.stdout)["body_bytes"] == 3_000_000
    chunked = await curl(
        ingress.https_port, HOST, "/upload", "-H", "Transfer-Encoding: chunked",
        "--data-binary", f"@{big}",
        ca=pki.path("root"),
    )  # fmt: skip
    assert json.loads(chunked.stdout)["body_bytes"] == 3_000_000
    streamed = await curl(ingress.https_port, HOST, "/stream?n=5", ca=pki.path("root"))
    assert streamed.stdout == "".join(f"chunk {i}\n" for i in range(5))
    both = await curl(
        ingress.https_port,
        HOST,
        "/one",
        "-v",
        f"https://{HOST}:{ingress.https_port}/two",
        ca=pki.path("root"),
    )
    assert "Re-using existing connection" in both.stderr or "Reusing existing" in both.stderr
    headers = json.loads(got.stdout)["headers"]
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Host"].startswith(HOST)


async def test_hostile_requests_are_refused(
    pki: TestPKI,
    ingress: IngressProcess,
    backend: EchoBackend,
    published: Published,
) -> None:
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    before = backend.requests
    ca, port = pki.path("root"), ingress.https_port
    smuggle = (
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    assert (await raw_https(port, HOST, smuggle, ca)).startswith(b"HTTP/1.1 400 ")
    two_lengths = (
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    ).encode()
    assert (await raw_https(port, HOST, two_lengths, ca)).startswith(b"HTTP/1.1 400 ")
    huge = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {'a' * 40000}\r\n\r\n".encode()
    assert (await raw_https(port, HOST, huge, ca)).startswith(b"HTTP/1.1 431 ")
    many = (
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\n"
        + "".join(f"X-{i}: 1\r\n" for i in range(150))
        + "\r\n"
    ).encode()
    assert (await raw_https(port, HOST, many, ca)).startswith(b"HTTP/1.1 431 ")
    no_host = b"GET / HTTP/1.1\r\n\r\n"
    assert (await raw_https(port, HOST, no_host, ca)).startswith(b"HTTP/1.1 400 ")
    folded = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n  continued\r\n\r\n".encode()
    assert (await raw_https(port, HOST, folded, ca)).startswith(b"HTTP/1.1 400 ")
    assert backend.requests == before  # none of it reached the backend


async def test_slow_clients_do_not_block_others(
    pki: TestPKI,
    start: StartIngress,
    published: Published,
) -> None:
    ingress = await start(workers=1, handshake_timeout_seconds="1", header_timeout_seconds="1")
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    # 200 connections that never finish a handshake, and one that stops mid-head.
    idle = [await asyncio.open_connection("127.0.0.1", ingress.https_port) for _ in range(200)]
    idle[0][1].write(b"\x16\x03\x01\x00")  # a truncated ClientHello
    ctx = ssl.create_default_context(cafile=str(pki.path("root")))
    r, w = await asyncio.open_connection(
        "127.0.0.1", ingress.https_port, ssl=ctx, server_hostname=HOST
    )
    w.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n".encode())  # and never the blank line
    started = time.monotonic()
    assert await route_ok(ingress, pki) is not None
    assert time.monotonic() - started < 2
    # The slow ones are cut off by the timeouts: handshake (1 s) and request head (1 s).
    assert (await asyncio.wait_for(r.read(4096), 5)).startswith(b"HTTP/1.1 408 ")
    for reader, writer in idle[:5]:
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    for _, writer in idle[5:]:
        writer.close()
    w.close()


async def test_http_redirects_to_https(
    ingress: IngressProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.http_port)
    writer.write(f"GET /path?x=1 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 308 ")
    assert f"Location: https://{HOST}/path?x=1".encode() in answer


async def test_sigterm_drains_requests_in_flight(
    pki: TestPKI,
    start: StartIngress,
    backend: EchoBackend,
    published: Published,
) -> None:
    ingress = await start(workers=1)
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    slow = asyncio.ensure_future(curl(ingress.https_port, HOST, "/slow?s=1.5", ca=pki.path("root")))
    await wait_for(
        lambda: asyncio.sleep(0, backend.requests >= 2), what="the slow request to arrive"
    )
    code = await ingress.stop()
    got = await slow
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["path"] == "/slow?s=1.5"
    assert code == 0


async def test_connections_beyond_the_bound_are_closed(
    pki: TestPKI,
    start: StartIngress,
    published: Published,
) -> None:
    ingress = await start(workers=1, max_connections="5")
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    held = [await asyncio.open_connection("127.0.0.1", ingress.https_port) for _ in range(5)]
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.https_port)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once, not queued
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    assert await route_ok(ingress, pki) is not None  # below the bound again: served


async def read_all_https(port: int, host: str, request: bytes, ca: Path) -> bytes:
    """Send raw bytes over TLS and read until the ingress closes the connection."""
    ctx = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_pipelined_requests_are_answered_in_order(
    pki: TestPKI, ingress: IngressProcess, published: Published
) -> None:
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    requests = b"".join(
        f"GET /{i} HTTP/1.1\r\nHost: {HOST}\r\n{'Connection: close' if i == 3 else 'X: y'}\r\n\r\n"
        .encode()
        for i in range(1, 4)
    )  # fmt: skip
    answer = await read_all_https(ingress.https_port, HOST, requests, pki.path("root"))
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [json.loads(b)["path"] for b in bodies] == ["/1", "/2", "/3"]
    assert answer.count(b"Connection: keep-alive") == 2
    assert answer.count(b"Connection: close") == 1


def _scripted(number: int, head: bytes) -> bytes | None:
    path = head.split(b" ", 2)[1]
    if path == b"/interim":  # an interim 100 before the final answer: the client sees 200 only
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nfinally"
    if path == b"/until-close":  # no length, no chunking: the body ends with the connection
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it, then a close"
    if path == b"/trailers":
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n"
        )
    if path == b"/dropped" and number > 0:  # a pooled connection dies as the request arrives
        return None
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_backend_framings_are_restated_and_a_dropped_pooled_connection_retried(
    api: ApiClient, namespace: str, pki: TestPKI, ingress: IngressProcess, site: MakeSite
) -> None:
    raw = await RawBackend(_scripted).start()
    try:
        await site(HOST, "shop-tls", staple=False)
        await expose(api, namespace, "raw", [raw.port])
        await publish(api, namespace, host=HOST, secret="shop-tls", service="raw")
        ca = pki.path("root")

        async def ok() -> bool:
            got = await curl(ingress.https_port, HOST, "/", ca=ca)
            return got.stdout == "ok"

        await wait_for(ok, what="route")
        interim = await curl(ingress.https_port, HOST, "/interim", "-i", ca=ca)
        assert interim.stdout.startswith("HTTP/1.1 200 OK"), interim.stdout
        assert "100 Continue" not in interim.stdout
        assert interim.stdout.endswith("finally")
        until_close = await curl(ingress.https_port, HOST, "/until-close", "-i", ca=ca)
        assert until_close.returncode == 0, until_close.stderr
        assert until_close.stdout.endswith("all of it, then a close")
        assert "Connection: close" in until_close.stdout
        trailers = await curl(ingress.https_port, HOST, "/trailers", "-i", ca=ca)
        assert trailers.stdout.endswith("hello world")
        assert "X-Checksum" not in trailers.stdout
        # Two requests on one client connection: the second finds the pooled backend
        # connection dropped (no answer) and is retried once on a fresh connection.
        before = raw.connections
        dropped = await read_all_https(
            ingress.https_port,
            HOST,
            f"GET /first HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            f"GET /dropped HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode(),
            ca,
        )
        assert dropped.count(b"HTTP/1.1 200 OK") == 2, dropped
        assert raw.connections >= before + 1
        assert sum(1 for r in raw.requests if r.startswith(b"GET /dropped ")) == 2
    finally:
        await raw.stop()


async def test_a_slow_client_gets_a_large_body_and_the_backend_connection_lives_on(
    pki: TestPKI, start: StartIngress, published: Published
) -> None:
    ingress = await start(workers=1)
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    port = ingress.https_port
    # The client reads slower than the backend sends: the relay pauses the backend and resumes
    # it; the backend connection then goes back to the pool reading again, and the next
    # request (same client connection, same pooled backend connection) is answered.
    got = await curl(
        port, HOST, "/after",
        "--limit-rate", "8M", "-w", "%{http_code} %{size_download}\\n",
        "-o", "/dev/null", "-o", "/dev/null", f"https://{HOST}:{port}/big?n=16000000",
        ca=pki.path("root"),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    first, second = got.stdout.splitlines()
    assert first == "200 16000000"
    assert second.startswith("200 ")


def _half_closed_exchange(port: int, host: str, ca: Path, request: bytes) -> bytes:
    """Send the request, then a TCP FIN (no close_notify), and read the answer to the end."""
    with hand_tls(port, host, ca) as tls:
        tls.send(request)
        tls.half_close()
        return tls.read()


async def test_a_client_that_half_closes_still_gets_its_answer(
    pki: TestPKI, ingress: IngressProcess, published: Published
) -> None:
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    request = f"GET /slow?s=0.3 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    answer = await asyncio.to_thread(
        _half_closed_exchange, ingress.https_port, HOST, pki.path("root"), request
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["path"] == "/slow?s=0.3"


async def test_a_refused_upload_still_gets_its_answer(
    pki: TestPKI, ingress: IngressProcess, published: Published, tmp_path: Path
) -> None:
    await published(HOST, "shop-tls", staple=False)
    await wait_for(lambda: route_ok(ingress, pki), what="route")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 8_000_000)
    # No rule for this host: the ingress answers 404 without reading the 8 MB body. With
    # "Expect: 100-continue" (curl's default for large bodies) no 100 may come before that
    # answer; without it the body is already on its way, and the unread bytes must not turn
    # the close into a reset that destroys the answer (a lingering close).
    for expect in ([], ["-H", "Expect:"], ["-H", "Expect:"]):
        got = await curl(
            ingress.https_port, "nobody.example.test", "/upload", "-k", *expect,
            "--data-binary", f"@{big}", "-o", "/dev/null", "-w", "%{http_code}",
        )  # fmt: skip
        assert got.stdout == "404", (expect, got.stdout, got.stderr)
