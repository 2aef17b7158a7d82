"""One ingress worker process: asyncio, TLS over memory BIOs, configuration from the supervisor.

Started by the supervisor with its listening sockets (SO_REUSEPORT, one per worker, so the
kernel spreads connections) and one end of a socket pair. It serves nothing until the first
configuration arrives, then applies every later snapshot in place: routes are swapped, new
certificates get new Contexts, staples are swapped in their holders.

Per connection the protocol does the least Python it can: bytes in, ``bio_write``,
``do_handshake`` or ``recv``, bytes out; the plaintext goes to the connection's session
(``proxying``), which answers through ``write``, ``close``, ``linger`` and ``abort``. A
handshake has ``handshake_timeout`` to finish, a request head ``header_timeout``; a worker
holds at most ``max_connections`` (more are closed at once). SIGTERM drains: listeners close,
idle keep-alive connections close, requests in flight finish (told ``Connection: close``)
within ``drain_timeout``.

No snapshot content ends a worker or the certificates it already serves: an entry that
cannot be loaded is left out (logged once per version), a route table that cannot be read
leaves the previous one in place, and a message that cannot be applied at all is logged and
the next one awaited.
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

from ocsp_stapler.ingress import channel, client_hello, tls
from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.proxying import ProxySettings, RedirectSession, Relay
from ocsp_stapler.ingress.routes import RouteTable, table_from_wire
from ocsp_stapler.ingress.ticket_keys import MAX_TICKET_LIFETIME
from ocsp_stapler.ingress.tls import RESUMED, CertificateStore, ConnectionOwner

logger = logging.getLogger("ocsp_stapler.ingress.worker")

LINGER = 5.0
"""Seconds a connection we close after an error answer keeps reading (see ``linger``)."""


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
        self.loop_time = asyncio.get_running_loop().time
        self.relay = Relay(
            routes=lambda: self.table,
            settings=settings.proxy,
            metrics=self.metrics,
            draining=lambda: self.draining or self.lame_duck,
            clock=self.loop_time,
        )
        self.connections: set[ClientConnection] = set()
        self.draining = False
        """Shutting down: no new connection, idle ones closed, requests in flight finish."""
        self.lame_duck = False
        """About to shut down: still accepting, every response ends its connection."""
        self.configured = asyncio.Event()
        self._refused: set[tuple[str, str]] = set()
        """(certificate id, version) already logged as not loadable."""
        self._no_tickets_said = False

    async def sweep(self) -> None:
        """Once a second: enforce every deadline (handshake, request head, idle keep-alive,
        backend answer, body progress); report the open connection count."""
        while True:
            await asyncio.sleep(1.0)
            now = self.loop_time()
            for conn in list(self.connections):
                try:
                    conn.expire(now)
                except Exception:  # one connection's bug must not end every deadline
                    logger.exception("enforcing a deadline failed; connection cut")
                    conn.abort()
            self.metrics.connections = len(self.connections)

    def apply(self, message: dict[str, Any]) -> None:
        """Install a snapshot; each part on its own, and never raising."""
        try:
            self.table = table_from_wire(message["routes"])
        except Exception:
            logger.exception("the route table could not be read; the previous one stays")
        certs = message.get("certs")
        if isinstance(certs, dict):
            try:
                failed = self.store.apply(
                    certs, message.get("default"), message.get("unbound") or ()
                )
            except Exception:
                logger.exception("the certificates could not be installed; the previous stay")
                failed = []
            refused = set()
            for cert_id in failed:
                c = certs.get(cert_id)
                version = str(c.get("version")) if isinstance(c, dict) else ""
                refused.add((cert_id, version))
                if (cert_id, version) not in self._refused:
                    logger.warning("certificate %s could not be loaded; not served", cert_id)
            self._refused = refused
        else:
            logger.warning("a configuration without certificates; the previous ones stay")
        self.configured.set()

    def set_ticket_key(self, message: dict[str, Any]) -> None:
        """The supervisor's session-ticket key (sent before the first snapshot, and at each
        rotation); never logged. Where OpenSSL cannot be given it: full handshakes, said once."""
        try:
            key = bytes.fromhex(message["ticket_key"])
            lifetime = float(message.get("lifetime") or 0.0)
            if not 0 <= lifetime <= MAX_TICKET_LIFETIME:  # NaN too: no Context could take it
                raise ValueError(lifetime)
        except (TypeError, ValueError):
            logger.warning("an unreadable session-ticket key; the previous one stays")
            return
        if not self.store.set_ticket_key(key, lifetime) and not self._no_tickets_said:
            self._no_tickets_said = True
            logger.warning(
                "session tickets are off: this cryptography build gives no way to share "
                "ticket keys between workers (full handshakes only)"
            )

    def session(self, conn: ClientConnection, client_ip: bytes) -> Session:
        if conn.tls:
            return self.relay.session(conn, client_ip=client_ip, proto=b"https")
        return RedirectSession(
            conn,
            https_port=self.settings.https_port,
            metrics=self.metrics,
            deadline=self.loop_time() + self.settings.proxy.header_timeout,
        )


class Session(Protocol):  # what serves a connection once its first plaintext byte arrives
    @property
    def idle(self) -> bool: ...
    def feed(self, data: bytes) -> None: ...
    def client_eof(self) -> None: ...
    def client_lost(self) -> None: ...
    def client_paused(self, paused: bool) -> None: ...
    def expire(self, now: float) -> None: ...


class ClientConnection(ConnectionOwner, asyncio.Protocol):
    """A client connection (TLS, or plain for the redirect listener).

    Kept lean for the handshake path, the ingress's hottest code: no task, no timer and no
    exception per handshake. The session (HTTP) starts with the first plaintext byte;
    before it, the handshake deadline (then the first request's) is enforced by the worker's
    once-a-second sweep.
    """

    __slots__ = (
        "closing", "conn", "deadline", "handshook", "hello", "lingering", "peer_closed",
        "session", "tls", "transport", "worker",
    )  # fmt: skip

    def __init__(self, worker: Worker, *, tls: bool) -> None:
        super().__init__()  # what the TLS callbacks report: staple, hellos, refused
        self.worker = worker
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.conn: SSL.Connection | None = None
        self.hello = b""
        """The ClientHello's first record while it arrives (before ``conn`` is made)."""
        self.handshook = not tls
        self.peer_closed = False
        self.lingering = False
        self.session: Session | None = None
        self.closing = False
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
        if self.tls and w.store.default is None:
            self.transport.abort()  # no certificate to serve yet

    def _start_tls(self, data: bytes) -> bool:
        """Make the TLS Connection once the ClientHello's first record is here (its server
        name picks the Context: ``client_hello``); False while more of it is to come."""
        hello = self.hello + data
        size = client_hello.record_length(hello)
        if size == 0 or (size is not None and len(hello) < size <= client_hello.MAX_RECORD):
            self.hello = hello
            return False
        first = hello[:size] if size is not None and size <= client_hello.MAX_RECORD else None
        self.hello = b""
        self.conn = self.worker.store.new_connection(self, first)
        if self.conn is None:
            self.abort()
            return False
        tls.feed(self.conn, hello)
        return True

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # what a client still sends after our final answer: read and dropped
        conn = self.conn
        if conn is None:
            if not self.tls:
                self._plaintext(data)
            elif self._start_tls(data):
                self.data_received(b"")
            return
        if data:
            tls.feed(conn, data)
        if not self.handshook and not self._handshake(conn):
            return
        try:
            plain, closed = tls.read_plaintext(conn)
        except SSL.Error:
            self.abort()
            return
        self._send_pending()
        if plain:
            self._plaintext(plain)
        if closed:
            # The client said close_notify: like nginx, answer with a plain TCP close (one
            # write less per connection), not a close_notify of our own.
            self.peer_closed = True
            self.eof_received()

    def _handshake(self, conn: SSL.Connection) -> bool:
        """Advance the handshake; True once it is done and the connection is to be served."""
        try:
            done = tls.handshake(conn)
        except SSL.Error:
            self._send_pending()  # the alert
            return self._fail_handshake()
        if not done:
            self._send_pending()
            return False
        if self.refused:  # by the SNI callback, though OpenSSL completed it (tls.py)
            return self._fail_handshake()
        if self.worker.store.refuses_without_sni() and conn.get_servername() is None:
            self.abort()
            return False
        self.handshook = True
        self.worker.metrics.handshake(
            tls.VERSIONS.get(conn.get_protocol_version(), "other"),
            RESUMED if tls.resumed(conn) else self.staple,
        )
        self.deadline = self.worker.loop_time() + self.worker.settings.proxy.header_timeout
        return True

    def _fail_handshake(self) -> bool:
        self.worker.metrics.failures += 1
        self.abort()
        return False

    def _plaintext(self, data: bytes) -> None:
        session = self.session
        if session is None:  # the first request: start serving now
            peer = self.transport.get_extra_info("peername") if self.transport else None
            client_ip = str(peer[0]).encode() if peer else b""
            session = self.session = self.worker.session(self, client_ip)
        session.feed(data)

    def eof_received(self) -> bool | None:
        """The client sends no more: a request in flight is still answered (half-close); the
        session closes the connection when it is done with it."""
        if self.lingering:
            return False  # it has read our answer and is done: close now
        if self.session is not None:
            self.session.client_eof()
            return True
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.worker.connections.discard(self)
        if self.session is not None:
            self.session.client_lost()

    # flow control ----------------------------------------------------------------------
    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.client_paused(True)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.client_paused(False)

    def pause_reading(self, paused: bool) -> None:
        if self.transport is None or self.closing:
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # writing and closing ------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closing or self.transport is None:
            return
        if self.conn is None:
            self.transport.write(data)
            return
        try:
            tls.write_plaintext(self.conn, data)
        except SSL.Error:
            self.abort()
            return
        self._send_pending()

    def _send_pending(self) -> None:
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        out = tls.pending_output(conn)
        if out:
            transport.write(out)

    def _close_notify(self) -> None:
        """Tell a TLS client we send no more (unless it closed first: then a TCP close)."""
        if self.conn is not None and self.handshook and not self.peer_closed:
            with contextlib.suppress(SSL.Error):
                self.conn.shutdown()
            self._send_pending()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        # The transport closes once its buffer is flushed: a client that never reads it gets
        # cut off by the sweep after a body timeout, not kept forever.
        self.deadline = self.worker.loop_time() + self.worker.settings.proxy.body_timeout
        self._close_notify()
        if self.transport is not None:
            self.transport.close()

    def write_eof(self) -> None:
        """Half-close, for a tunnel whose backend is done sending: close_notify, then a TCP
        FIN once the buffer is flushed, while what the client still sends is read and relayed
        (unlike ``linger``). The tunnel closes the connection when the client is done too."""
        transport = self.transport
        if self.closing or transport is None or transport.is_closing():
            return
        self._close_notify()
        if transport.can_write_eof():
            transport.write_eof()

    def linger(self) -> None:
        """Close once the client has had time to read our answer: stop writing (close_notify,
        then a TCP half-close) but keep reading, and dropping, what it still sends for up to
        LINGER seconds. Closing at once with its unread bytes in our socket would make the
        kernel send a reset, which can destroy the answer before the client reads it (nginx's
        "lingering close")."""
        if self.closing:
            return
        self.closing = self.lingering = True
        self._close_notify()
        transport = self.transport
        if transport is None:
            return
        transport.resume_reading()  # whatever paused it, from now on everything is dropped
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self.deadline = self.worker.loop_time() + LINGER

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def idle(self) -> bool:
        return self.session is None or self.session.idle

    def expire(self, now: float) -> None:
        """Enforce the current deadline (the sweep calls this once a second)."""
        if self.closing:
            if 0.0 < self.deadline < now:
                self.abort()
        elif self.session is not None:
            self.session.expire(now)
        elif 0.0 < self.deadline < now:  # a handshake, or a first request, too slow
            if self.handshook:
                self.worker.metrics.request(408)
            else:
                self.worker.metrics.failures += 1
            self.abort()


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
            if message.get("lame_duck") is True:
                worker.lame_duck = True
            if "ticket_key" in message:
                worker.set_ticket_key(message)
            if "routes" in message:
                try:
                    worker.apply(message)
                except Exception:  # never stop following the supervisor
                    logger.exception("a configuration could not be applied")
        stop.set()  # the supervisor is gone: exit (it restarts us, or it is shutting down)

    follower = loop.create_task(follow_config())
    await asyncio.wait(
        {follower, loop.create_task(worker.configured.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    servers = [
        await loop.create_server(
            lambda: ClientConnection(worker, tls=True),
            sock=https_sock,
            backlog=4096,
        )
    ]
    if http_sock is not None:
        servers.append(
            await loop.create_server(
                lambda: ClientConnection(worker, tls=False),
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
        conn.abort()
    reporter.cancel()
    sweeper.cancel()
    with contextlib.suppress(Exception):
        await channel.send(writer, {"metrics": worker.metrics.snapshot()})
    follower.cancel()
    worker.relay.pool.close()


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
