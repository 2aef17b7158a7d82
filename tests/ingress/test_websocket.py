"""WebSocket and other HTTP/1.1 Upgrades through the ingress.

End to end: aiohttp's own WebSocket client (``ws_connect``) and server (``WebSocketResponse``)
on either side of a real ingress process over TLS. Then the tunnel's state machine driven
event by event (the orders of half-closes, pauses and failures that real peers produce only
by timing), with the real ProxySession, Tunnel and BackendConnection fed recorded transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp
import pytest
from devcluster.pki import TestPKI

from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.proxying import TUNNEL, ProxySession, ProxySettings, Relay
from ocsp_stapler.ingress.routes import Endpoint, HostRules, PathRule, RouteTable, ServiceBackend
from ocsp_stapler.ingress.upstreams import BackendConnection
from ocsp_stapler.k8s.client import ApiClient
from support.backends import StreamBackend, WebSocketBackend, expose
from support.ingresses import IngressProcess, MakeSite, StartIngress, curl, publish
from support.kube import wait_for
from support.recorders import Recorder
from support.tls_by_hand import hand_tls

HOST = "ws.example.test"
WSMsgType = aiohttp.WSMsgType
MB = 1_000_000


@pytest.fixture
async def ws_backend() -> AsyncIterator[WebSocketBackend]:
    b = await WebSocketBackend().start()
    yield b
    await b.stop()


Routed = Callable[[IngressProcess], Awaitable[None]]


@pytest.fixture
def routed(
    api: ApiClient, namespace: str, pki: TestPKI, site: MakeSite, ws_backend: WebSocketBackend
) -> Routed:
    """Publish HOST (TLS Secret, Service, Ingress) to the WebSocket backend; wait until an
    ingress routes it."""

    async def make(ingress: IngressProcess) -> None:
        await site(HOST, "ws-tls", staple=False)
        await expose(api, namespace, "ws", [ws_backend.port])
        await publish(api, namespace, host=HOST, secret="ws-tls", service="ws")

        async def plain_ok() -> bool:
            got = await curl(ingress.https_port, HOST, "/plain", ca=pki.path("root"))
            return got.stdout == "no websocket here"

        await wait_for(plain_ok, timeout=30, what="the route")

    return make


@contextlib.asynccontextmanager
async def websocket(
    ingress: IngressProcess, pki: TestPKI, path: str = "/echo", **session: object
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """aiohttp's WebSocket client, through the ingress over TLS (SNI and Host: HOST)."""
    ctx = ssl.create_default_context(cafile=str(pki.path("root")))
    async with (
        aiohttp.ClientSession(**session) as s,  # type: ignore[arg-type]
        s.ws_connect(
            f"wss://127.0.0.1:{ingress.https_port}{path}",
            ssl=ctx,
            server_hostname=HOST,
            headers={"Host": HOST},
            max_msg_size=0,
        ) as ws,
    ):
        yield ws


async def echoed(ws: aiohttp.ClientWebSocketResponse, data: str | bytes) -> bool:
    if isinstance(data, str):
        await ws.send_str(data)
    else:
        await ws.send_bytes(data)
    msg = await ws.receive(timeout=20)
    expected = WSMsgType.TEXT if isinstance(data, str) else WSMsgType.BINARY
    return msg.type == expected and msg.data == data


async def metric(ingress: IngressProcess, line: str) -> bool:
    got = await ingress.get("/metrics")
    return got is not None and line in got[1]


def handshakes(backend: WebSocketBackend, path: str = "/echo") -> list[dict[str, str]]:
    return [headers for p, headers, _ in backend.seen if p == path]


# ---------------------------------------------------------------------------- end to end


async def test_messages_go_both_ways_text_binary_and_large(
    pki: TestPKI, ingress: IngressProcess, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    await routed(ingress)
    async with websocket(ingress, pki) as ws:
        assert await echoed(ws, "héllo, wörld")
        assert await echoed(ws, bytes(range(256)) * 4)
        big = bytes(range(251)) * (6 * MB // 251)  # ~6 MB, a pattern that shows reordering
        assert await echoed(ws, big)
        await ws.send_str(f"flood 1 {6 * MB}")  # and as large a message from the server
        msg = await ws.receive(timeout=20)
        assert msg.type == WSMsgType.BINARY
        assert len(msg.data) == 6 * MB
        assert msg.data[:8] == (0).to_bytes(8, "big")
        assert await echoed(ws, "still in step")


async def test_the_upgrade_headers_reach_the_backend(
    pki: TestPKI, ingress: IngressProcess, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    await routed(ingress)
    async with websocket(ingress, pki) as ws:
        assert await echoed(ws, "hi")
    (headers,) = handshakes(ws_backend)
    assert headers["Connection"].lower() == "upgrade"
    assert headers["Upgrade"].lower() == "websocket"
    assert headers["Sec-WebSocket-Version"] == "13"
    assert len(headers["Sec-WebSocket-Key"]) == 24  # aiohttp's client checked the Accept
    assert headers["Host"] == HOST
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-For"] == "127.0.0.1"


async def test_a_close_from_either_side_reaches_the_other_with_its_code(
    pki: TestPKI, start: StartIngress, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    ingress = await start(workers=1)
    await routed(ingress)
    async with websocket(ingress, pki) as ws:
        assert await echoed(ws, "before")
        assert await ws.close(code=4001)  # the server's close frame came back
        assert ws.close_code == 1000  # what aiohttp's server answers with
    await wait_for(lambda: asyncio.sleep(0, ws_backend.closes == [4001]), what="server close")

    async with websocket(ingress, pki) as ws:
        await ws.send_str("close 4002")
        msg = await ws.receive(timeout=10)
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4002, "bye")
        assert ws.close_code == 4002
    await wait_for(lambda: asyncio.sleep(0, ws_backend.server_closed == [True]), what="reply")
    # Both tunnels were torn down, not left half-open: once a snapshot counts both switches,
    # a later one shows the worker holding no connection.
    await wait_for(
        lambda: metric(ingress, 'ocsp_stapler_ingress_upgrades_total{result="switched"} 2.0'),
        what="both switches counted",
    )
    await wait_for(
        lambda: metric(ingress, "ocsp_stapler_ingress_connections 0.0"), what="no connections"
    )


def _worker_pid(ingress: IngressProcess) -> int:
    """The one worker of an ingress started with workers=1."""
    (pid,) = ingress.worker_pids()
    return pid


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def held_back(progress: Callable[[], int], total: int) -> int:
    """Wait until a sender stops short of ``total``: blocked a full second without progress,
    so what it sent is all that the peers, the kernel and the ingress hold between them."""
    loop = asyncio.get_running_loop()
    last = [-1, 0.0]

    async def probe() -> bool:
        sent, now = progress(), loop.time()
        assert sent < total, "everything went through: nothing held the sender back"
        if sent != last[0]:
            last[:] = [sent, now]
            return False
        return now - last[1] >= 1.0

    await wait_for(probe, timeout=60, what="the sender to be held back")
    return progress()


TOTAL, MESSAGE = 50 * MB, MB
BOUND = 20 * 1024 * 1024
"""What the worker may grow by while 50 MB wait behind a reader that does not read: its own
buffers are a write buffer's high-water mark and a read or two per direction (unbounded, it
would hold the 50 MB, twice: plaintext and TLS records)."""


@pytest.mark.parametrize("reader", ["client", "backend"])
async def test_a_reader_that_stops_holds_the_sender_back_and_the_ingress_buffers_little(
    pki: TestPKI, start: StartIngress, routed: Routed, ws_backend: WebSocketBackend, reader: str
) -> None:
    ingress = await start(workers=1)
    await routed(ingress)
    pid = _worker_pid(ingress)
    async with websocket(ingress, pki) as ws:
        assert await echoed(ws, b"x" * MESSAGE)  # the buffers a full flow needs, allocated
        before = _rss(pid)
        if reader == "client":  # the server floods, the client reads nothing
            await ws.send_str(f"flood {TOTAL // MESSAGE} {MESSAGE}")
            sent = await held_back(lambda: ws_backend.flooded, TOTAL)
            grown = _rss(pid) - before
            for i in range(TOTAL // MESSAGE):  # now it reads: all of it, in order
                msg = await ws.receive(timeout=20)
                assert msg.type == WSMsgType.BINARY
                assert (len(msg.data), msg.data[:8]) == (MESSAGE, i.to_bytes(8, "big"))
            assert ws_backend.flooded == TOTAL
        else:  # the client floods, the server reads nothing until released
            await ws.send_str("sink")
            progress = [0]

            async def flood() -> None:
                for _ in range(TOTAL // MESSAGE):
                    await ws.send_bytes(b"s" * MESSAGE)
                    progress[0] += MESSAGE

            sending = asyncio.ensure_future(flood())
            sent = await held_back(lambda: progress[0], TOTAL)
            grown = _rss(pid) - before
            ws_backend.release.set()
            await asyncio.wait_for(sending, 60)
            await ws.send_str("done")
            msg = await ws.receive(timeout=20)
            assert msg.data == f"got {TOTAL}"
    assert grown < BOUND, (grown, sent)


async def test_an_idle_tunnel_is_closed_after_the_idle_timeout(
    pki: TestPKI, start: StartIngress, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    ingress = await start(workers=1, tunnel_idle_timeout_seconds="2")
    await routed(ingress)
    loop = asyncio.get_running_loop()
    async with websocket(ingress, pki) as ws:
        opened = loop.time()
        while loop.time() - opened < 4:  # traffic every half second: twice the timeout, open
            assert await echoed(ws, "tick")
            await asyncio.sleep(0.5)
        quiet_since = loop.time()
        msg = await ws.receive(timeout=15)  # then nothing either way
        assert msg.type == WSMsgType.CLOSED
        assert loop.time() - quiet_since >= 1.9
    # The backend's side was closed too (abruptly for it: no close frame came).
    await wait_for(lambda: asyncio.sleep(0, ws_backend.closes == [1006]), what="backend close")


async def test_a_backend_that_does_not_switch_gives_an_ordinary_answer(
    pki: TestPKI, start: StartIngress, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    ingress = await start(workers=1)
    await routed(ingress)
    pooled = {peer for _, _, peer in ws_backend.seen}  # what the route probes left in the pool
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with websocket(ingress, pki, "/plain"):
            pass
    assert refused.value.status == 200
    (_, headers, upgrade_peer) = ws_backend.seen[-1]
    assert headers["Upgrade"] == "websocket"
    assert upgrade_peer not in pooled  # the upgrade had a fresh backend connection
    got = await curl(ingress.https_port, HOST, "/plain", ca=pki.path("root"))
    assert got.stdout == "no websocket here"  # healthy, and
    assert ws_backend.seen[-1][2] != upgrade_peer  # that connection was closed, not pooled
    async with websocket(ingress, pki) as ws:
        assert await echoed(ws, "and upgrades still work")
    for result in ("declined", "switched"):
        line = f'ocsp_stapler_ingress_upgrades_total{{result="{result}"}} 1.0'
        await wait_for(partial(metric, ingress, line), what=f"the {result} upgrade counted")


async def _raw_exchange(ingress: IngressProcess, pki: TestPKI, request: bytes) -> bytes:
    ctx = ssl.create_default_context(cafile=str(pki.path("root")))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", ingress.https_port, ssl=ctx, server_hostname=HOST
    )
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_h2c_is_not_tunnelled_and_upgrades_with_a_body_are_refused(
    pki: TestPKI, ingress: IngressProcess, routed: Routed, ws_backend: WebSocketBackend
) -> None:
    await routed(ingress)
    h2c = (
        f"GET /h2c HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    ).encode()
    answer = await _raw_exchange(ingress, pki, h2c)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")  # plain HTTP/1.1, not a 101
    (headers,) = handshakes(ws_backend, "/h2c")
    assert not {"Upgrade", "Connection", "HTTP2-Settings"} & set(headers)
    body = (
        f"GET /echo HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Content-Length: 5\r\n\r\nhello"
    ).encode()
    assert (await _raw_exchange(ingress, pki, body)).startswith(b"HTTP/1.1 400 ")
    assert handshakes(ws_backend) == []  # it never reached the backend


async def test_a_tunnel_lives_through_the_lame_duck_and_the_drain_until_its_timeout(
    pki: TestPKI, start: StartIngress, routed: Routed
) -> None:
    delay, drain = 2.0, 3.0
    ingress = await start(
        workers=1, shutdown_delay_seconds=str(delay), drain_timeout_seconds=str(drain)
    )
    await routed(ingress)
    loop = asyncio.get_running_loop()
    async with websocket(ingress, pki) as before:
        assert await echoed(before, "open before SIGTERM")
        sigterm = loop.time()
        ingress.proc.send_signal(signal.SIGTERM)

        async def not_ready() -> bool:
            got = await ingress.get("/readyz")
            return got is not None and got[0] == 503

        await wait_for(not_ready, what="the lame duck")
        async with websocket(ingress, pki) as during:  # upgrades are still served meanwhile
            assert await echoed(during, "opened in the lame duck")
            assert await echoed(before, "the first one too")
            # Into the drain (it starts after the delay; the supervisor keeps the listening
            # socket, so nothing outside shows it), which closes idle connections every 50 ms:
            await asyncio.sleep(sigterm + delay + 0.5 - loop.time())
            assert await echoed(before, "still open while draining")
            assert await echoed(during, "this one too")
            for ws in (before, during):  # until the drain timeout aborts them
                msg = await ws.receive(timeout=15)
                assert msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
            assert loop.time() - sigterm >= delay + drain - 0.5
    assert await ingress.stop() == 0


class _RawTunnelBackend(StreamBackend):
    """Answers an upgrade to /tunnel with 101 (protocol "x-lines"), then half-closes as
    scripted: "first" sends a line and half-closes before reading; "last" reads to the
    client's EOF, then answers and closes. What it read after the 101 is in ``got``. Any
    other request (the route probes) gets a 204 and a close."""

    def __init__(self, order: str) -> None:
        super().__init__()
        self.order = order
        self.got = b""
        self.done = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"GET /tunnel "):
                writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
            writer.write(b"Upgrade: x-lines\r\n\r\n")
            if self.order == "first":
                writer.write(b"backend says bye\n")
                writer.write_eof()
            self.got = await reader.read()  # to the client's EOF
            if self.order == "last":
                writer.write(b"backend read: " + self.got)
            await writer.drain()
            self.done.set()
        finally:
            writer.close()


def _tls_half_close_client(port: int, ca: Path, order: str) -> tuple[bytes, bytes]:
    """Through the upgrade, then half-close with a TCP FIN: (what was read before our EOF,
    what after it)."""
    with hand_tls(port, HOST, ca) as tls:
        tls.send(
            f"GET /tunnel HTTP/1.1\r\nHost: {HOST}\r\nConnection: upgrade\r\n"
            "Upgrade: x-lines\r\n\r\n".encode()
        )
        # "first": the backend's EOF arrives as close_notify, read all before it; "last":
        # the 101 only
        before = tls.read(lambda got: order == "last" and b"\r\n\r\n" in got)
        tls.send(b"client says bye\n")  # after the backend's EOF this direction still flows
        tls.half_close()
        return before, tls.read()


@pytest.mark.parametrize("order", ["first", "last"])
async def test_a_half_close_on_either_side_reaches_the_other_and_the_rest_flows(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    ingress: IngressProcess,
    site: MakeSite,
    order: str,
) -> None:
    backend = await _RawTunnelBackend(order).start()
    await site(HOST, "ws-tls", staple=False)
    await expose(api, namespace, "raw", [backend.port])
    await publish(api, namespace, host=HOST, secret="ws-tls", service="raw")
    ca = pki.path("root")

    async def routed() -> bool:
        got = await curl(ingress.https_port, HOST, "/", "-o", "/dev/null", "-w", "%{http_code}",
                         ca=ca)  # fmt: skip
        return got.stdout == "204"

    await wait_for(routed, timeout=30, what="the route")
    before, after = await asyncio.to_thread(_tls_half_close_client, ingress.https_port, ca, order)
    await asyncio.wait_for(backend.done.wait(), 10)
    head, _, rest = before.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"Upgrade: x-lines" in head
    if order == "first":  # the backend's EOF: the client read all, then its EOF came
        assert rest == b"backend says bye\n"
        assert after == b""
    else:  # the client's EOF: the backend read to it, and its answer still came back
        assert rest == b""
        assert after == b"backend read: client says bye\n"
    assert backend.got == b"client says bye\n"
    await backend.stop()


# ------------------------------------------------------------ the state machine, by event


ENDPOINT = Endpoint("127.0.0.1", 8080)
UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"
)
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


class Exchange:
    """A session of a relay with one route, whose fresh backend connections are recorded
    transports (``connect`` hands them out) and whose pool starts with one idle connection."""

    def __init__(self, *, idle_timeout: float = 60.0, draining: bool = False) -> None:
        rules = HostRules()
        rules.add(PathRule(path="/", exact=False, backend_key="b"))
        table = RouteTable(
            exact={"a.test": rules}, backends={"b": ServiceBackend("b", (ENDPOINT,))}
        )
        self.now = 0.0
        self.relay = Relay(
            routes=lambda: table,
            settings=ProxySettings(tunnel_idle_timeout=idle_timeout),
            metrics=WorkerMetrics(),
            draining=lambda: draining,
            clock=lambda: self.now,
        )
        self.pooled, self.pooled_side = self._backend()
        self.relay.pool.put(self.pooled)
        self.fresh, self.backend = self._backend()
        self.relay.pool.connect = self._connect  # type: ignore[method-assign]
        self.client = Recorder()
        self.session: ProxySession = self.relay.session(
            self.client,  # type: ignore[arg-type]
            client_ip=b"10.0.0.1",
            proto=b"https",
        )

    def _backend(self) -> tuple[BackendConnection, Recorder]:
        side = Recorder()
        upstream = BackendConnection(ENDPOINT, self.relay.pool)
        upstream.connection_made(side)  # type: ignore[arg-type]
        return upstream, side

    async def _connect(self, endpoint: Endpoint) -> BackendConnection:
        return self.fresh

    async def ask(self, request: bytes = UPGRADE) -> None:
        self.session.feed(request)
        await asyncio.sleep(0)  # the connect task runs
        await asyncio.sleep(0)  # and its done callback

    async def switched(self) -> None:
        """Through the handshake, its bytes taken: what is recorded next is the tunnel's."""
        await self.ask()
        self.fresh.data_received(SWITCHED)
        assert self.session.phase == TUNNEL
        self.client.take()
        self.backend.take()


async def test_an_upgrade_takes_a_fresh_connection_with_its_headers_and_bytes_sent_early() -> None:
    x = Exchange()
    await x.ask(UPGRADE + b"\x81\x02hi")  # a frame sent before the 101 came
    sent = x.backend.take()
    assert sent.startswith(b"GET /chat HTTP/1.1\r\n")
    assert b"Connection: upgrade\r\nUpgrade: websocket\r\n" in sent
    assert sent.count(b"Connection:") == 1
    assert b"\x81\x02hi" not in sent  # the next protocol's bytes wait for the backend's yes
    assert x.pooled.owner is None  # the pooled connection was left alone
    x.fresh.data_received(SWITCHED + b"\x81\x05hello")
    assert x.client.take() == SWITCHED.replace(b"Upgrade\r\nUpgrade", b"upgrade\r\nUpgrade") + (
        b"\x81\x05hello"
    )
    assert x.backend.take() == b"\x81\x02hi"
    assert not x.session.idle  # a drain waits for it
    x.session.feed(b"any bytes at all\r\n\r\n")  # no more HTTP: passed on as they are
    x.fresh.data_received(b"GET / HTTP/1.1\r\n")
    assert x.backend.take() == b"any bytes at all\r\n\r\n"
    assert x.client.take() == b"GET / HTTP/1.1\r\n"
    assert x.relay.metrics.upgrades == {"switched": 1}


async def test_a_declined_upgrade_is_an_ordinary_answer_and_its_connection_is_closed() -> None:
    x = Exchange()
    await x.ask()
    x.fresh.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nUpgrade: no\r\n\r\nno")
    answer = x.client.take()
    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Upgrade" not in answer
    assert b"Connection: keep-alive" in answer  # the client's connection goes on
    assert x.backend.closed
    assert x.fresh not in x.relay.pool.idle[ENDPOINT]
    assert x.relay.metrics.upgrades == {"declined": 1}


@pytest.mark.parametrize(
    ("request_", "answer"),
    [
        (UPGRADE, b"HTTP/1.1 101 OK\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"),
        (UPGRADE, b"HTTP/1.1 101 OK\r\nConnection: upgrade\r\n\r\n"),
        (b"GET / HTTP/1.1\r\nHost: a.test\r\nX: 1\r\n\r\n", SWITCHED),  # not asked at all
    ],
)
async def test_a_switch_to_a_protocol_the_client_did_not_offer_is_a_502(
    request_: bytes, answer: bytes
) -> None:
    x = Exchange()
    if request_ == UPGRADE:
        await x.ask(request_)
        upstream = x.fresh
    else:  # an ordinary request takes the pooled connection
        x.session.feed(request_)
        upstream = x.pooled
    upstream.data_received(answer)
    assert x.client.take().startswith(b"HTTP/1.1 502 ")
    assert x.session.phase != TUNNEL
    assert x.client.closed


async def test_an_upgrade_with_a_body_is_refused_and_h2c_goes_on_as_http11() -> None:
    x = Exchange()
    x.session.feed(UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nhi"))
    assert x.client.take().startswith(b"HTTP/1.1 400 ")
    assert x.relay.metrics.upgrades == {"failed": 1}
    y = Exchange()
    y.session.feed(UPGRADE.replace(b"websocket", b"h2c"))  # an ordinary request, pooled
    sent = y.pooled_side.take()
    assert b"Upgrade" not in sent
    assert b"Connection" not in sent
    assert y.relay.metrics.upgrades == {}


async def test_backpressure_pauses_the_other_side_both_ways() -> None:
    x = Exchange()
    await x.switched()
    x.fresh.pause_writing()  # the backend takes no more: the client's reads pause
    assert not x.client.reading
    x.fresh.resume_writing()
    assert x.client.reading
    x.session.client_paused(True)  # the client takes no more: the backend's reads pause
    assert not x.backend.reading
    x.session.client_paused(False)
    assert x.backend.reading


async def test_a_backend_full_or_a_client_full_at_the_switch_stays_paused() -> None:
    x = Exchange()
    await x.ask()
    x.fresh.pause_writing()
    x.session.client_paused(True)
    x.fresh.data_received(SWITCHED)
    assert not x.client.reading
    assert not x.backend.reading
    x.fresh.resume_writing()
    x.session.client_paused(False)
    assert x.client.reading
    assert x.backend.reading


async def test_the_backend_half_closes_first_then_the_client() -> None:
    x = Exchange()
    await x.switched()
    assert x.fresh.eof_received() is True  # kept open: the client may still send
    assert x.client.state == "half-closed"
    x.session.feed(b"last words")
    assert x.backend.take() == b"last words"
    x.session.client_eof()
    assert (x.client.state, x.backend.state) == ("closed", "closed")


async def test_the_client_half_closes_first_then_the_backend() -> None:
    x = Exchange()
    await x.switched()
    x.session.client_eof()
    assert x.backend.state == "half-closed"
    x.session.client_eof()  # again (a close_notify, then the FIN): nothing more happens
    x.fresh.data_received(b"the answer")
    assert x.client.take() == b"the answer"
    x.fresh.eof_received()
    assert (x.client.state, x.backend.state) == ("closed", "closed")


async def test_a_client_that_half_closed_before_the_101_is_half_closed_in_the_tunnel() -> None:
    x = Exchange()
    await x.ask()
    x.session.client_eof()
    x.fresh.data_received(SWITCHED)
    assert x.backend.eof


async def test_a_reset_on_either_side_aborts_both() -> None:
    x = Exchange()
    await x.switched()
    x.fresh.connection_lost(ConnectionResetError())
    assert x.client.aborted
    y = Exchange()
    await y.switched()
    y.session.client_lost()
    assert y.backend.aborted


async def test_a_backend_gone_after_its_eof_still_lets_the_client_read_all() -> None:
    x = Exchange()
    await x.switched()
    x.fresh.data_received(b"tail")
    x.fresh.eof_received()
    x.fresh.connection_lost(None)
    assert x.client.take() == b"tail"
    assert x.client.state == "closed"


async def test_no_byte_either_way_for_the_idle_timeout_closes_both() -> None:
    x = Exchange(idle_timeout=10.0)
    await x.switched()
    x.now = 8.0
    x.session.feed(b"ping")
    x.now = 15.0
    x.session.expire(x.now)  # 7 s after the last byte: open
    assert not x.client.closed
    x.fresh.data_received(b"pong")
    x.now = 24.0
    x.session.expire(x.now)
    assert not x.client.closed
    x.now = 25.5
    x.session.expire(x.now)
    assert (x.client.state, x.backend.state) == ("closed", "closed")


async def test_while_draining_an_upgrade_is_still_switched_and_never_idle() -> None:
    x = Exchange(draining=True)
    await x.switched()
    assert not x.session.idle
    x.session.feed(b"still flowing")
    assert x.backend.take() == b"still flowing"
