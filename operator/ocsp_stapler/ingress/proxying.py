"""Serving one client connection: read requests, route them, relay them to a backend.

Callback-driven on purpose. The first version ran a coroutine per connection over asyncio
streams, with a timer per read: ~80 µs of CPU per proxied request against nginx's ~18 µs
(bench/results.md). Here a session is a small state machine fed by the client connection's
``data_received`` and by its backend connection's (``upstreams.BackendConnection``): a
request head is parsed, its backend connection taken from the pool and written to in the
same callback, and the response is re-framed and written to the client in the callback that
brings it. Nothing waits, so there is no task, future or timer per request: deadlines are
plain numbers that the worker's once-a-second sweep checks (``expire``).

Bodies are streamed both ways with their framing re-stated (``message_bodies``), never
buffered whole; backpressure pauses the other side's reads. Errors the client sees:
400/431/501/505 for requests that cannot be proxied safely, 404 for no rule, 503 for no ready
endpoint, 502 when the backend refuses or breaks, 504 when it does not accept or answer in
time, 408 when the first request head does not arrive in time.

A request that asks to switch protocols (``Connection: upgrade`` and ``Upgrade``: WebSocket
and the like) keeps those two fields and gets a fresh backend connection of its own, never
pooled. If the backend answers 101, the client gets the 101 and the connection becomes a byte
tunnel (``tunnels``); any other answer is relayed as usual and the backend connection closed.
h2c is never offered (``http1.NOT_TUNNELLED``): such a request goes on as plain HTTP/1.1. An
upgrade request with a body is refused (400): which bytes are body and which the new protocol
would be for the backend to decide, and it is not needed by WebSocket (a GET).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ocsp_stapler.ingress import http1
from ocsp_stapler.ingress.message_bodies import (
    NOTHING,
    ChunkedBody,
    LengthBody,
    MessageBody,
    decoder,
)
from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.routes import Endpoint, RouteTable
from ocsp_stapler.ingress.tunnels import Tunnel
from ocsp_stapler.ingress.upstreams import BackendConnection, ConnectionPool


@dataclass(frozen=True)
class ProxySettings:
    header_timeout: float = 10.0
    """Seconds for a client to send a complete request head (slowloris)."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive client connection may sit between requests."""
    body_timeout: float = 60.0
    """Seconds without progress while streaming a body, either way."""
    tunnel_idle_timeout: float = 3600.0
    """Seconds a tunnel (WebSocket...) may carry no byte either way before both sides are
    closed: longer than a keep-alive's idle time, since applications ping at their own pace
    (ingress-nginx's 60 s proxy-read-timeout is a frequent complaint)."""
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    """Seconds for a backend to send its response head (504 after)."""
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    pool_size: int = 32
    """Idle backend connections kept per endpoint."""


class Client(Protocol):
    """The client connection as a session sees it (TLS or plain, in ``worker``)."""

    closing: bool

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def linger(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self, paused: bool) -> None: ...


def split_head(buffer: bytes, limit: int) -> tuple[bytes, bytes] | None:
    """(head, rest) once ``buffer`` holds a whole head; None while it may still come.
    BadMessage(431) when the head is longer than ``limit``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > limit:
            raise http1.BadMessage("request head too large", 431)
        return None
    end += 4
    if end > limit:
        raise http1.BadMessage("request head too large", 431)
    return buffer[:end], buffer[end:]


class Relay:
    """What every session of a worker shares: routes, backend pool, settings, metrics."""

    def __init__(
        self,
        *,
        routes: Callable[[], RouteTable],
        settings: ProxySettings,
        metrics: WorkerMetrics,
        draining: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = routes
        self.settings = settings
        self.metrics = metrics
        self.draining = draining
        self.clock = clock
        self.pool = ConnectionPool(
            size=settings.pool_size, connect_timeout=settings.connect_timeout
        )

    def session(self, client: Client, *, client_ip: bytes, proto: bytes) -> ProxySession:
        return ProxySession(self, client, client_ip=client_ip, proto=proto)


IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# A session's phase: reading a request head; streaming a request body to the backend;
# waiting for the rest of the response (the request is sent); a tunnel (after a 101).
HEAD, BODY, WAIT, TUNNEL = 0, 1, 2, 3
# Why the client's reads are paused (a bit each).
_UPSTREAM_FULL, _PIPELINE_FULL = 1, 2


class ProxySession:
    """The requests of one client connection, one exchange at a time (keep-alive,
    pipelining: requests that arrive early wait in ``buffer``)."""

    __slots__ = (
        "bodyless", "buffer", "client", "client_ended", "client_full", "client_ip", "closed",
        "connecting", "deadline", "endpoint", "first", "http10", "keep", "method", "out_head",
        "pauses", "phase", "proto", "relay", "request_body", "response_body", "response_buffer",
        "retried", "reused", "started", "tunnel", "upgrade", "upstream", "upstream_keep",
    )  # fmt: skip

    def __init__(self, relay: Relay, client: Client, *, client_ip: bytes, proto: bytes) -> None:
        self.relay = relay
        self.client = client
        self.client_ip = client_ip
        self.proto = proto
        self.buffer = b""
        """Client bytes not consumed yet (a partial head, or requests pipelined early)."""
        self.phase = HEAD
        self.first = True
        self.closed = False
        self.http10 = False
        self.deadline = relay.clock() + relay.settings.header_timeout
        self.pauses = 0
        self.client_full = False
        self.client_ended = False
        """The client sent EOF while its request was answered."""
        self.tunnel: Tunnel | None = None
        """Set when the backend switched protocols: from then on it serves the connection."""
        # The exchange in progress.
        self.endpoint: Endpoint | None = None
        self.upstream: BackendConnection | None = None
        self.connecting: asyncio.Task[BackendConnection] | None = None
        self.request_body: MessageBody = MessageBody()
        self.response_body: MessageBody | None = None
        """None until the response head has been relayed."""
        self.response_buffer = b""
        self.out_head = b""
        self.method = b""
        self.keep = True
        self.upstream_keep = False
        self.bodyless = True
        self.reused = False
        self.retried = False
        self.started = 0.0
        self.upgrade: bytes | None = None
        """The protocols this request offers to switch to (None: an ordinary request)."""

    @property
    def idle(self) -> bool:
        """Between requests (safe to close when draining)."""
        return self.phase == HEAD and not self.buffer

    # ------------------------------------------------------------------ client events

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        if self.phase == BODY and self.upstream is not None and not self.buffer:
            data = self._forward_request_body(data)
            if not data:
                return
        self.buffer = self.buffer + data if self.buffer else data
        if self.phase == HEAD:
            self._next_requests()
        elif len(self.buffer) > self.relay.settings.max_header_bytes:
            self._pause_client(_PIPELINE_FULL, True)

    def client_eof(self) -> None:
        """The client will send nothing more."""
        if self.tunnel is not None:
            self.tunnel.client_eof()
        elif self.phase == HEAD:
            self._close()
        elif self.phase == BODY:
            self._abort()  # the request body broke off
        else:
            self.keep = False  # answer this request, then close
            self.client_ended = True

    def client_lost(self) -> None:
        self.closed = True
        if self.tunnel is not None:
            self.tunnel.client_lost()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.upstream is not None:  # mid-exchange: the backend connection is out of step
            self.upstream.abort()
            self.upstream = None

    def client_paused(self, paused: bool) -> None:
        """The client's send buffer is full (or drained again): pause the backend's reads."""
        self.client_full = paused
        if self.upstream is not None:
            self.upstream.pause_reading(paused)
        elif self.tunnel is not None:
            self.tunnel.client_paused(paused)

    def expire(self, now: float) -> None:
        """Called by the worker's sweep; acts when the current deadline has passed."""
        if self.tunnel is not None:
            self.tunnel.expire(now)
            return
        if self.closed or not 0.0 < self.deadline < now:
            return
        if self.phase == HEAD:
            if self.first:
                self._reply(408, "request head not received in time", close=True)
            else:
                self._close()
        elif self.phase == WAIT and self.response_body is None:
            where = self._where()
            self._fail(504, f"backend {where} did not answer in time")
        else:
            self._abort()  # a body made no progress in time

    # ----------------------------------------------------------------------- requests

    def _next_requests(self) -> None:
        settings = self.relay.settings
        while self.phase == HEAD and not self.closed and self.buffer:
            try:
                split = split_head(self.buffer, settings.max_header_bytes)
            except http1.BadMessage as exc:
                self._reply(exc.status, str(exc), close=True)
                return
            if split is None:
                return
            raw, self.buffer = split
            self.first = False
            self._request(raw)

    def _request(self, raw: bytes) -> None:
        relay = self.relay
        fast = http1.fast_request(
            raw, client_ip=self.client_ip, proto=self.proto, max_headers=relay.settings.max_headers
        )
        if fast is not None:
            method, target, host, self.out_head = fast
            framing, keep, body, self.http10 = http1.NO_BODY, True, NOTHING, False
            continue_ = False
        else:
            try:
                head = http1.parse_request_head(raw, max_headers=relay.settings.max_headers)
                framing = http1.request_framing(head)
                self.upgrade = http1.upgrade_offer(head)
            except http1.BadMessage as exc:
                self._reply(exc.status, str(exc), close=True)
                return
            if self.upgrade is not None and framing.kind != "none":
                self._reply(400, "an Upgrade request cannot have a body here", close=True)
                return
            method, target, version = head.start
            host = head.get(b"host") or b""
            keep = http1.keep_alive(head, version)
            self.http10 = version == b"HTTP/1.0"
            self.out_head = http1.forward_head(
                head,
                client_ip=self.client_ip,
                proto=self.proto,
                framing=framing,
                upgrade=self.upgrade,
            )
            body = decoder(framing)
            expect = head.get(b"expect")
            continue_ = expect is not None and expect.lower() == b"100-continue"
        keep = keep and not relay.draining()
        backend = relay.routes().route_raw(host, target)
        if backend is None:
            where = f"{host.decode('latin-1')}{target.decode('latin-1')[:200]}"
            self._refuse(framing, 404, f"no rule for {where}", keep)
            return
        endpoint = backend.next_endpoint()
        if endpoint is None:
            self._refuse(framing, 503, f"no ready endpoint for {backend.name}", keep)
            return
        if continue_ and not self.http10:
            # Only now that the request will be forwarded: a refusal above is the final answer,
            # and the client then never sends the body at all.
            self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.method, self.keep, self.endpoint = method, keep, endpoint
        self.request_body = body
        self.bodyless = body.done
        self.response_body = None
        self.retried = False
        self._enter(WAIT if body.done else BODY)
        # An upgrade may turn the connection into a tunnel: a fresh one, never pooled after.
        pooled = relay.pool.take(endpoint) if self.upgrade is None else None
        if pooled is not None:
            self._attach(pooled, reused=True)
        else:
            self._connect(endpoint)

    def _refuse(self, framing: http1.Framing, status: int, message: str, keep: bool) -> None:
        # A request body we will not read: close rather than guess where it ends.
        self._reply(status, message, close=not keep or framing.kind != "none")

    def _enter(self, phase: int) -> None:
        self.phase = phase
        s = self.relay.settings
        timeout = s.upstream_timeout if phase == WAIT else s.body_timeout
        self.deadline = self.relay.clock() + timeout

    def _forward_request_body(self, data: bytes) -> bytes:
        """Relay request body bytes; return what follows the body (the next request)."""
        try:
            out, used = self.request_body.feed(data)
        except http1.BadMessage as exc:
            self._fail(exc.status, str(exc))
            return b""
        if out and self.upstream is not None:
            self.upstream.write(out)
        if self.request_body.done:
            self._enter(WAIT)
        else:
            self.deadline = self.relay.clock() + self.relay.settings.body_timeout
        return data[used:] if used < len(data) else b""

    # ---------------------------------------------------------------- the backend side

    def _connect(self, endpoint: Endpoint) -> None:
        task = asyncio.get_running_loop().create_task(self.relay.pool.connect(endpoint))
        task.add_done_callback(self._connected)
        self.connecting = task

    def _connected(self, task: asyncio.Task[BackendConnection]) -> None:
        if task.cancelled():
            return
        if task is not self.connecting:
            if task.exception() is None:
                task.result().close()
            return
        self.connecting = None
        exc = task.exception()
        if isinstance(exc, TimeoutError):
            self._fail(504, f"backend {self._where()} did not accept in time")
        elif isinstance(exc, OSError):
            detail = exc.strerror or str(exc)
            self._fail(502, f"backend {self._where()} refused: {detail}")
        elif exc is not None:
            self._fail(502, f"backend {self._where()} failed: {exc}")
        elif task.result().closed:  # accepted, then closed before we could use it
            self._fail(502, f"backend {self._where()} closed the connection at once")
        else:
            self._attach(task.result(), reused=False)

    def _attach(self, upstream: BackendConnection, *, reused: bool) -> None:
        upstream.owner = self
        self.upstream, self.reused = upstream, reused
        if self.client_full:
            upstream.pause_reading(True)
        if upstream.writing_paused:
            self._pause_client(_UPSTREAM_FULL, True)
        self.started = self.relay.clock()
        upstream.write(self.out_head)
        if self.phase == BODY and self.buffer:
            data, self.buffer = self.buffer, b""
            self.buffer = self._forward_request_body(data)
            self._pause_client(_PIPELINE_FULL, False)

    def upstream_data(self, data: bytes) -> None:
        parts: list[bytes] = []
        body = self.response_body
        if body is None:
            got = self._response_head(data)
            if got is None:
                return
            head, data, body = got
            parts.append(head)
        if data:
            try:
                out, used = body.feed(data)
            except http1.BadMessage:
                out, used = b"", 0
                self.upstream_keep = self.keep = False
                body.done = True  # cut the response short: the client sees a close
            if out:
                parts.append(out)
            if used < len(data):  # more than the response: the backend is out of step
                self.upstream_keep = False
        if parts:
            self.client.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if body.done:
            self._exchange_done()
        else:
            self.deadline = self.relay.clock() + self.relay.settings.body_timeout

    def _response_head(self, data: bytes) -> tuple[bytes, bytes, MessageBody] | None:
        """The client's response head, the bytes after it and the body's decoder; None until
        the head is complete (or when it failed: then the client has its 502)."""
        relay = self.relay
        buffer = self.response_buffer + data if self.response_buffer else data
        while True:
            try:
                split = split_head(buffer, relay.settings.max_header_bytes)
                if split is None:
                    self.response_buffer = buffer
                    return None
                raw, buffer = split
                if relay.draining():
                    self.keep = False  # say so now: the connection closes after this response
                fast = http1.fast_response(raw, request_method=self.method, keep=self.keep)
                if fast is not None:
                    status, out, length, self.upstream_keep = fast
                    body: MessageBody = LengthBody(length) if length else NOTHING
                    break
                head = http1.parse_response_head(raw)
                status = int(head.start[1])
                if status == 101:  # only to the protocols offered: else a BadMessage (502)
                    out = http1.switched_head(head, offered=self.upgrade or b"")
                    break
                if 100 <= status < 200:
                    continue  # an interim response: the client gets the final one only
                framing = http1.response_framing(head, request_method=self.method)
            except http1.BadMessage as exc:
                message = "backend response head too large" if exc.status == 431 else str(exc)
                self._fail(502, message)
                return None
            self.upstream_keep = framing.kind != "close" and http1.keep_alive(head, head.start[0])
            if framing.kind == "chunked" and self.http10:
                # An HTTP/1.0 client cannot read chunks: the body goes out plain, to the close.
                framing, body = http1.UNTIL_CLOSE, ChunkedBody(reencode=False)
            else:
                body = decoder(framing)
            if framing.kind == "close":
                self.keep = False
            out = http1.response_head(
                head, framing, keep=self.keep, to_head_request=self.method == b"HEAD"
            )
            break
        self.response_buffer = b""
        relay.metrics.upstream_latency(relay.clock() - self.started)
        relay.metrics.request(status)
        if status == 101:
            self._switch(out, buffer)
            return None
        if self.upgrade is not None:  # declined: an ordinary answer, on a connection not pooled
            relay.metrics.upgrade("declined")
            self.upgrade = None
            self.upstream_keep = False
        self.response_body = body
        return out, buffer, body

    def _switch(self, head: bytes, rest: bytes) -> None:
        """The backend switched protocols: the client gets the 101, and a tunnel takes the
        backend connection, the bytes either side sent early and the flow control."""
        upstream, self.upstream = self.upstream, None
        if upstream is None:  # pragma: no cover - the 101 came from it
            self._abort()
            return
        relay, settings = self.relay, self.relay.settings
        relay.metrics.upgrade("switched")
        self.upgrade = None
        self.phase = TUNNEL
        self.client.write(head)
        tunnel = self.tunnel = Tunnel(
            self.client,
            upstream,
            clock=relay.clock,
            idle_timeout=settings.tunnel_idle_timeout,
            flush_timeout=settings.body_timeout,
            client_paused=bool(self.pauses),
            client_full=self.client_full,
        )
        self.pauses = 0  # the tunnel's now
        if rest:
            tunnel.upstream_data(rest)
        early, self.buffer = self.buffer, b""
        if early:
            tunnel.client_data(early)
        if self.client_ended:
            tunnel.client_eof()

    def upstream_eof(self) -> bool:
        body = self.response_body
        if body is not None and not body.done and body.end():
            self.upstream_keep = False
            self._exchange_done()
        return False

    def upstream_lost(self, upstream: BackendConnection) -> None:
        if upstream is not self.upstream:
            return
        self.upstream = None
        body = self.response_body
        if body is None:
            # A pooled connection the backend closed meanwhile: one retry on a fresh one, only
            # when nothing of the answer came, no request body was consumed and the method is
            # idempotent (RFC 9110 9.2.2: the backend may have acted on it).
            if (
                self.reused
                and self.bodyless
                and not self.response_buffer
                and self.method in IDEMPOTENT
                and not self.retried
                and self.endpoint
            ):
                self.retried = True
                self._connect(self.endpoint)
                return
            self._fail(502, f"backend {self._where()} broke off")
        elif body is not None and not body.done and body.end():
            self.upstream_keep = False
            self._exchange_done()
        else:
            self._abort()  # the response broke off after its head: the client sees a close

    def upstream_paused(self, paused: bool) -> None:
        self._pause_client(_UPSTREAM_FULL, paused)

    def _exchange_done(self) -> None:
        upstream, self.upstream = self.upstream, None
        if self.phase == BODY:  # answered before the request body ended
            self.keep = self.upstream_keep = False
        if upstream is not None:
            upstream.release(self.upstream_keep)
        self.response_body = None
        if not self.keep:
            self._close(linger=self.phase == BODY)
            return
        self.phase = HEAD
        self.deadline = self.relay.clock() + self.relay.settings.idle_timeout
        self._pause_client(_PIPELINE_FULL | _UPSTREAM_FULL, False)
        if self.buffer:
            self._next_requests()

    # ---------------------------------------------------------------------- endings

    def _where(self) -> str:
        e = self.endpoint
        return f"{e.address}:{e.port}" if e is not None else "?"

    def _fail(self, status: int, message: str) -> None:
        """The exchange failed: the client gets ``status`` if no response head went out."""
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.response_body is None:
            self._reply(status, message, close=True)
        else:
            self._abort()

    def _reply(self, status: int, message: str, *, close: bool) -> None:
        self.relay.metrics.request(status)
        if self.upgrade is not None:  # an upgrade the backend did not answer
            self.relay.metrics.upgrade("failed")
            self.upgrade = None
        self.client.write(http1.simple_response(status, message, close=close))
        if close:  # the client may still be sending (a body, the rest of a head): linger
            self._close(linger=True)
        else:
            self.phase = HEAD
            self.deadline = self.relay.clock() + self.relay.settings.idle_timeout

    def _pause_client(self, reason: int, paused: bool) -> None:
        before = self.pauses
        self.pauses = before | reason if paused else before & ~reason
        if bool(before) != bool(self.pauses) and not self.closed:
            self.client.pause_reading(bool(self.pauses))

    def _close(self, *, linger: bool = False) -> None:
        self.client_lost()
        if linger:
            self.client.linger()
        else:
            self.client.close()

    def _abort(self) -> None:
        self.client_lost()
        self.client.abort()


class RedirectSession:
    """Plain HTTP: every request gets a 308 to the same URL over https, then a close."""

    __slots__ = ("buffer", "client", "closed", "deadline", "https_port", "idle", "metrics")

    def __init__(
        self, client: Client, *, https_port: int, metrics: WorkerMetrics, deadline: float
    ) -> None:
        self.client = client
        self.https_port = https_port
        self.metrics = metrics
        self.deadline = deadline
        self.buffer = b""
        self.idle = True
        self.closed = False

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        try:
            split = split_head(self.buffer, 32 * 1024)
            if split is None:
                return
            head = http1.parse_request_head(split[0])
        except http1.BadMessage as exc:
            self._answer(http1.simple_response(exc.status, str(exc), close=True))
            return
        host = (head.get(b"host") or b"").split(b":", 1)[0]
        port = b"" if self.https_port == 443 else b":%d" % self.https_port
        location = b"https://" + host + port + head.start[1]
        self.metrics.request(308)
        self._answer(
            http1.simple_response(308, "use https", close=True, extra=[(b"Location", location)])
        )

    def _answer(self, response: bytes) -> None:
        self.closed = True
        self.client.write(response)
        self.client.linger()  # whatever else the client sends must not reset the answer

    def client_eof(self) -> None:
        self.client_lost()
        self.client.close()

    def client_lost(self) -> None:
        self.closed = True

    def client_paused(self, paused: bool) -> None:
        pass

    def expire(self, now: float) -> None:
        if not self.closed and self.deadline < now:
            self.client_lost()
            self.client.close()
