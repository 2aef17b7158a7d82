"""One ingress worker process: asyncio, TLS over memory BIOs, configuration from the watcher.

Started by the supervisor with its listening sockets (SO_REUSEPORT, one per worker, so the
kernel spreads connections) and one end of a socket pair. It serves nothing until the first
configuration arrives, then applies every later snapshot in place: routes are swapped, new
certificates get new Contexts, staples are swapped in their holders.

Per connection the protocol does the least Python it can: bytes in, ``bio_write``,
``do_handshake`` or ``recv``, bytes out. A handshake has ``handshake_timeout`` to finish, a
request head ``header_timeout``; a worker holds at most ``max_connections`` (more are closed
at once). SIGTERM drains: listeners close, idle keep-alive connections close, requests in
flight finish (told ``Connection: close``) within ``drain_timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

from OpenSSL import SSL

from ocsp_stapler.ingress import channel, http1, tls
from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.proxying import BackendPool, ConnectionServer, ProxySettings
from ocsp_stapler.ingress.routes import RouteTable, table_from_wire
from ocsp_stapler.ingress.tls import NOT_REQUESTED, CertificateStore

logger = logging.getLogger("ocsp_stapler.ingress.worker")


@dataclass(frozen=True)
class WorkerSettings:
    handshake_timeout: float = 10.0
    max_connections: int = 10_000
    drain_timeout: float = 20.0
    must_staple_policy: str = "lenient"
    https_port: int = 443
    """Advertised in redirects from the HTTP listener."""
    proxy: ProxySettings = field(default_factory=ProxySettings)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        raw = json.loads(text)
        raw["proxy"] = ProxySettings(**raw["proxy"])
        return cls(**raw)


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics()
        self.store = CertificateStore(must_staple_policy=settings.must_staple_policy)
        self.table = RouteTable()
        self.pool = BackendPool(settings.proxy)
        self.server = ConnectionServer(
            routes=lambda: self.table,
            pool=self.pool,
            settings=settings.proxy,
            metrics=self.metrics,
            draining=lambda: self.draining,
        )
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.configured = asyncio.Event()
        self.loop_time = asyncio.get_running_loop().time

    async def sweep(self) -> None:
        """Once a second: cut connections that did not finish their handshake (or, after it,
        send a first request) in time (slowloris); report the open connection count."""
        while True:
            await asyncio.sleep(1.0)
            now = self.loop_time()
            for conn in [c for c in self.connections if c.overdue(now)]:
                if conn.handshook:
                    self.metrics.request(408)
                else:
                    self.metrics.failures += 1
                conn._abort()
            self.metrics.connections = len(self.connections)

    def apply(self, message: dict[str, Any]) -> None:
        self.table = table_from_wire(message["routes"])
        failed = self.store.apply(message["certs"], message.get("default"))
        for cert_id in failed:
            logger.warning("certificate %s could not be loaded; not served", cert_id)
        self.configured.set()


class Server(Protocol):  # what serves a connection once its first request arrives
    async def serve(
        self, reader: asyncio.StreamReader, writer: Any, *, client_ip: str, proto: bytes
    ) -> None: ...


class ClientConnection(asyncio.Protocol):
    """A client connection (TLS, or plain for the redirect listener).

    Kept lean for the handshake path, the ingress's hottest code: no task, no timer and no
    exception per handshake. The request-serving task starts with the first plaintext byte;
    handshake and first-request deadlines are enforced by the worker's once-a-second sweep.
    """

    __slots__ = (
        "_resume", "client_ip", "closing", "conn", "deadline", "handshook", "idle", "reader",
        "server", "staple", "task", "tls", "transport", "worker",
    )  # fmt: skip

    def __init__(self, worker: Worker, *, tls: bool, server: Server) -> None:
        self.worker = worker
        self.tls = tls
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn: SSL.Connection | None = None
        self.handshook = not tls
        self.reader: asyncio.StreamReader | None = None
        self.task: asyncio.Task[None] | None = None
        self.client_ip = ""
        self.closing = False
        self.idle = True
        self.staple = NOT_REQUESTED
        self._resume: asyncio.Event | None = None
        self.deadline = 0.0
        """Monotonic time by which the handshake (then the first request) must progress."""

    # asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are stream transports without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        w = self.worker
        if w.draining or len(w.connections) >= w.settings.max_connections:
            self.transport.abort()
            return
        w.connections.add(self)
        self.deadline = w.loop_time() + w.settings.handshake_timeout
        if self.tls:
            self.conn = w.store.new_connection(self)
            if self.conn is None:
                self.transport.abort()
                return

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            if not self.tls:
                self._plaintext(data)
            return
        conn.bio_write(data)
        if not self.handshook:
            try:
                done = tls.handshake(conn)
            except SSL.Error:
                self._send_pending()
                self.worker.metrics.failures += 1
                self._abort()
                return
            if not done:
                self._send_pending()
                return
            self.handshook = True
            self.worker.metrics.handshake(
                tls.VERSIONS.get(conn.get_protocol_version(), "other"), self.staple
            )
            if conn.get_servername() is None and self.worker.store.refuses_without_sni():
                self._abort()
                return
            self.deadline = self.worker.loop_time() + self.worker.settings.proxy.header_timeout
        try:
            plain, closed = tls.read_plaintext(conn)
        except SSL.Error:
            self._abort()
            return
        self._send_pending()
        if plain:
            self._plaintext(plain)
        if closed and self.reader is not None:
            self.reader.feed_eof()
        elif closed:
            self.close()

    def _plaintext(self, data: bytes) -> None:
        if self.reader is None:  # the first request: start serving now
            self.reader = asyncio.StreamReader(limit=self.worker.settings.proxy.max_header_bytes)
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self.client_ip = str(peer[0]) if peer else ""
            self.task = asyncio.get_running_loop().create_task(
                self.server.serve(
                    self.reader,
                    self,
                    client_ip=self.client_ip,
                    proto=b"https" if self.tls else b"http",
                )
            )
            self.deadline = 0.0  # the server's own timeouts apply from here
        self.reader.feed_data(data)

    def eof_received(self) -> bool | None:
        if self.reader is not None:
            self.reader.feed_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._resume is not None:
            self._resume.set()
        if self.reader is not None:
            self.reader.feed_eof()
        self.worker.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # flow control -------------------------------------------------------------------------
    def pause_writing(self) -> None:
        if self._resume is None:
            self._resume = asyncio.Event()
        self._resume.clear()

    def resume_writing(self) -> None:
        if self._resume is not None:
            self._resume.set()

    async def drain(self) -> None:
        if self.closing:
            raise ConnectionError("connection closed")
        if self._resume is not None:
            await self._resume.wait()

    # writing ------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closing or self.transport is None:
            return
        if self.conn is None:
            self.transport.write(data)
            return
        try:
            self.conn.sendall(data)
        except SSL.Error:
            self._abort()
            return
        self._send_pending()

    def _send_pending(self) -> None:
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        out = tls.pending_output(conn)
        if out:
            transport.write(out)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.conn is not None and self.handshook:
            with contextlib.suppress(SSL.Error):
                self.conn.shutdown()
            self._send_pending()
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def overdue(self, now: float) -> bool:
        """Still handshaking (or silent before a first request) past its deadline."""
        return self.task is None and 0.0 < self.deadline < now


class RedirectServer:
    """Plain HTTP: every request gets a 308 to the same URL over https."""

    def __init__(self, https_port: int, metrics: WorkerMetrics) -> None:
        self.https_port = https_port
        self.metrics = metrics

    async def serve(
        self, reader: asyncio.StreamReader, writer: Any, *, client_ip: str, proto: bytes
    ) -> None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            head = http1.parse_request_head(raw)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            writer.close()
            return
        except http1.BadMessage as exc:
            writer.write(http1.simple_response(exc.status, str(exc), close=True))
            writer.close()
            return
        host = (head.get(b"host") or b"").split(b":", 1)[0]
        port = b"" if self.https_port == 443 else b":%d" % self.https_port
        location = b"https://" + host + port + head.start[1]
        self.metrics.request(308)
        writer.write(
            http1.simple_response(308, "use https", close=True, extra=[(b"Location", location)])
        )
        await writer.drain()
        writer.close()


async def _report_metrics(worker: Worker, writer: asyncio.StreamWriter) -> None:
    while True:
        await asyncio.sleep(1.0)
        await channel.send(writer, {"metrics": worker.metrics.snapshot()})


async def run_worker(
    settings: WorkerSettings,
    https_sock: socket.socket,
    http_sock: socket.socket | None,
    control: socket.socket,
) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(settings)
    reader, writer = await asyncio.open_connection(sock=control, limit=channel.MAX_MESSAGE)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def follow_config() -> None:
        while (message := await channel.receive(reader)) is not None:
            if "routes" in message:
                worker.apply(message)
        stop.set()  # the watcher is gone: exit (it restarts us, or it is shutting down)

    follower = loop.create_task(follow_config())
    await asyncio.wait(
        {follower, loop.create_task(worker.configured.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    servers = [
        await loop.create_server(
            lambda: ClientConnection(worker, tls=True, server=worker.server),
            sock=https_sock,
            backlog=4096,
        )
    ]
    if http_sock is not None:
        redirect = RedirectServer(settings.https_port, worker.metrics)
        servers.append(
            await loop.create_server(
                lambda: ClientConnection(worker, tls=False, server=redirect),
                sock=http_sock,
                backlog=4096,
            )
        )
    reporter = loop.create_task(_report_metrics(worker, writer))
    sweeper = loop.create_task(worker.sweep())
    await stop.wait()

    # Drain: stop accepting, close idle connections, let requests in flight finish.
    worker.draining = True
    for server in servers:
        server.close()
    deadline = loop.time() + settings.drain_timeout
    while worker.connections and loop.time() < deadline:
        for conn in list(worker.connections):
            if conn.idle:
                conn.close()
        await asyncio.sleep(0.05)
    for conn in list(worker.connections):
        conn._abort()
    reporter.cancel()
    sweeper.cancel()
    with contextlib.suppress(Exception):
        await channel.send(writer, {"metrics": worker.metrics.snapshot()})
    follower.cancel()
    worker.pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocsp-stapler-ingress-worker")
    parser.add_argument("--https-fd", type=int, required=True)
    parser.add_argument("--http-fd", type=int, default=-1)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--settings", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s"
    )
    https_sock = socket.socket(fileno=args.https_fd)
    http_sock = socket.socket(fileno=args.http_fd) if args.http_fd >= 0 else None
    control = socket.socket(fileno=args.control_fd)
    coro = run_worker(WorkerSettings.from_json(args.settings), https_sock, http_sock, control)
    try:  # libuv's loop: ~15% less CPU per handshake and per request (bench/results.md)
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
