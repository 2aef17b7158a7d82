"""Serving one client connection: read requests, route them, relay them to a backend.

Transport-agnostic: the TLS and plain-HTTP protocols in ``worker`` hand over a reader (a
StreamReader fed with plaintext) and a ``ClientWriter``. Bodies are streamed both ways with
their framing re-stated (length or chunked), never buffered whole. Backend connections are
pooled per endpoint and reused when the backend keeps them alive.

Errors the client sees: 400/431/501/505 for requests that cannot be proxied safely, 404 for
no rule, 503 for no ready endpoint, 502 when the backend refuses or breaks, 504 when it does
not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ocsp_stapler.ingress import http1
from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.routes import Endpoint, RouteTable

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 64 * 1024
MAX_CHUNK_LINE = 4096


@dataclass(frozen=True)
class ProxySettings:
    header_timeout: float = 10.0
    """Seconds for a client to send a complete request head (slowloris)."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive client connection may sit between requests."""
    body_timeout: float = 60.0
    """Seconds without progress while streaming a body, either way."""
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    """Seconds for a backend to send its response head (504 after)."""
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    pool_size: int = 32
    """Idle backend connections kept per endpoint."""


class ClientWriter(Protocol):
    idle: bool
    """True while waiting for the next request head (safe to close when draining)."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closing(self) -> bool: ...


class Backend:
    __slots__ = ("endpoint", "idle_since", "reader", "writer")

    def __init__(
        self, endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.endpoint, self.reader, self.writer = endpoint, reader, writer
        self.idle_since = 0.0

    def usable(self, now: float, max_idle: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and now - self.idle_since < max_idle
        )

    def close(self) -> None:
        self.writer.close()


class BackendPool:
    """Idle keep-alive connections per endpoint (a fresh connection when none is usable)."""

    def __init__(self, settings: ProxySettings, max_idle: float = 30.0) -> None:
        self.settings = settings
        self.max_idle = max_idle
        self.idle: dict[Endpoint, list[Backend]] = defaultdict(list)

    async def get(self, endpoint: Endpoint) -> tuple[Backend, bool]:
        """A connection, and whether it was reused (a reused one may have been closed by the
        backend meanwhile: the caller retries once on a fresh one)."""
        now = time.monotonic()
        stack = self.idle.get(endpoint)
        while stack:
            backend = stack.pop()
            if backend.usable(now, self.max_idle):
                return backend, True
            backend.close()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                endpoint.address, endpoint.port, limit=self.settings.max_header_bytes
            ),
            timeout=self.settings.connect_timeout,
        )
        return Backend(endpoint, reader, writer), False

    def put(self, backend: Backend) -> None:
        stack = self.idle[backend.endpoint]
        if len(stack) >= self.settings.pool_size:
            backend.close()
            return
        backend.idle_since = time.monotonic()
        stack.append(backend)

    def close(self) -> None:
        for stack in self.idle.values():
            for backend in stack:
                backend.close()
        self.idle.clear()


class UpstreamFailed(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``asyncio.wait_for`` without its cost: in Python 3.11 wait_for wraps every read in a
    new Task; ``asyncio.timeout`` only schedules a timer. This runs several times per request."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def _read_head(reader: asyncio.StreamReader, seconds: float) -> bytes:
    return await within(seconds, reader.readuntil(b"\r\n\r\n"))


Write = Callable[[bytes], None]
Drain = Callable[[], Awaitable[None]]


async def _copy_length(
    reader: asyncio.StreamReader, write: Write, drain: Drain, length: int, seconds: float
) -> None:
    remaining = length
    while remaining:
        data = await within(seconds, reader.read(min(CHUNK, remaining)))
        if not data:
            raise ConnectionError("body ended early")
        remaining -= len(data)
        write(data)
        await drain()


async def _copy_chunked(
    reader: asyncio.StreamReader, write: Write, drain: Drain, seconds: float
) -> None:
    while True:
        line = await within(seconds, reader.readuntil(b"\r\n"))
        if len(line) > MAX_CHUNK_LINE:
            raise http1.BadMessage("chunk size line too long")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise http1.BadMessage("malformed chunk size") from None
        if size == 0:
            while (await within(seconds, reader.readuntil(b"\r\n"))) != b"\r\n":
                pass  # trailers: dropped
            write(b"0\r\n\r\n")
            await drain()
            return
        write(b"%x\r\n" % size)
        await _copy_length(reader, write, drain, size, seconds)
        if await within(seconds, reader.readexactly(2)) != b"\r\n":
            raise http1.BadMessage("malformed chunk")
        write(b"\r\n")


async def _copy_until_close(
    reader: asyncio.StreamReader, write: Write, drain: Drain, seconds: float
) -> None:
    while data := await within(seconds, reader.read(CHUNK)):
        write(data)
        await drain()


async def copy_body(
    reader: asyncio.StreamReader, write: Write, drain: Drain, framing: http1.Framing, seconds: float
) -> None:
    """Relay one body with the given framing (chunked is re-encoded, trailers dropped)."""
    if framing.kind == "length":
        await _copy_length(reader, write, drain, framing.length, seconds)
    elif framing.kind == "chunked":
        await _copy_chunked(reader, write, drain, seconds)
    elif framing.kind == "close":
        await _copy_until_close(reader, write, drain, seconds)


class ConnectionServer:
    """Serves the requests of one client connection, one after another (keep-alive)."""

    def __init__(
        self,
        *,
        routes: Callable[[], RouteTable],
        pool: BackendPool,
        settings: ProxySettings,
        metrics: WorkerMetrics,
        draining: Callable[[], bool],
    ) -> None:
        self.routes = routes
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.draining = draining

    def _reply(self, writer: ClientWriter, status: int, message: str, *, close: bool) -> None:
        self.metrics.request(status)
        writer.write(http1.simple_response(status, message, close=close))

    async def serve(
        self, reader: asyncio.StreamReader, writer: ClientWriter, *, client_ip: str, proto: bytes
    ) -> None:
        first = True
        try:
            while not writer.closing:
                wait = self.settings.header_timeout if first else self.settings.idle_timeout
                writer.idle = True
                try:
                    raw = await _read_head(reader, wait)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the client went away between requests
                except TimeoutError:
                    if first:
                        self._reply(writer, 408, "request head not received in time", close=True)
                    return
                except asyncio.LimitOverrunError:
                    self._reply(writer, 431, "request head too large", close=True)
                    return
                first = False
                writer.idle = False
                try:
                    head = http1.parse_request_head(raw, max_headers=self.settings.max_headers)
                    framing = http1.request_framing(head)
                except http1.BadMessage as exc:
                    self._reply(writer, exc.status, str(exc), close=True)
                    return
                keep = http1.keep_alive(head, head.start[2]) and not self.draining()
                if not await self._one(
                    reader, writer, head, framing, keep=keep, client_ip=client_ip, proto=proto
                ):
                    return
                if not keep:
                    return
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _one(  # noqa: PLR0911 (one return per outcome)
        self,
        reader: asyncio.StreamReader,
        writer: ClientWriter,
        head: http1.Head,
        framing: http1.Framing,
        *,
        keep: bool,
        client_ip: str,
        proto: bytes,
    ) -> bool:
        """Proxy one request; False when the connection must close."""
        method, target, _version = head.start
        host = (head.get(b"host") or b"").decode("latin-1")
        upstream = self.routes().route(host, target.decode("latin-1"))
        if upstream is None:
            return self._drain_and_reply(
                writer, framing, 404, f"no rule for {host}{target.decode('latin-1')[:200]}", keep
            )
        endpoint = upstream.next_endpoint()
        if endpoint is None:
            return self._drain_and_reply(
                writer, framing, 503, f"no ready endpoint for {upstream.name}", keep
            )
        if (head.get(b"expect") or b"").lower() == b"100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            head.headers = [(k, v) for k, v in head.headers if k.lower() != b"expect"]
        out_head = http1.serialize(
            (method, target, b"HTTP/1.1"),
            http1.forward_headers(head, client_ip=client_ip, proto=proto, framing=framing),
        )
        started = time.monotonic()
        try:
            backend, response = await self._exchange(
                endpoint, out_head, reader, framing, bodyless=framing.kind == "none"
            )
        except UpstreamFailed as exc:
            self._reply(writer, exc.status, str(exc), close=True)
            return False
        except http1.BadMessage as exc:
            self._reply(writer, exc.status, str(exc), close=True)
            return False
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            return False  # the client's body broke off
        self.metrics.upstream_latency(time.monotonic() - started)
        status = int(response.start[1])
        self.metrics.request(status)
        resp_framing = http1.response_framing(response, request_method=method)
        backend_keep = (
            http1.keep_alive(response, response.start[0]) and resp_framing.kind != "close"
        )
        keep = keep and resp_framing.kind != "close"
        writer.write(
            http1.serialize(
                (b"HTTP/1.1", response.start[1], response.start[2]),
                http1.response_headers(response, resp_framing, keep=keep),
            )
        )
        try:
            await copy_body(
                backend.reader, writer.write, writer.drain, resp_framing, self.settings.body_timeout
            )
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, http1.BadMessage):
            backend.close()
            return False
        if backend_keep:
            self.pool.put(backend)
        else:
            backend.close()
        await writer.drain()
        return keep

    def _drain_and_reply(
        self, writer: ClientWriter, framing: http1.Framing, status: int, message: str, keep: bool
    ) -> bool:
        # A request body we will not read: close rather than guess where it ends.
        close = not keep or framing.kind != "none"
        self._reply(writer, status, message, close=close)
        return not close

    async def _exchange(
        self,
        endpoint: Endpoint,
        out_head: bytes,
        reader: asyncio.StreamReader,
        framing: http1.Framing,
        *,
        bodyless: bool,
    ) -> tuple[Backend, http1.Head]:
        """Send the request, return the backend and its response head."""
        for attempt in range(2):
            try:
                backend, reused = await self.pool.get(endpoint)
            except TimeoutError:
                raise UpstreamFailed(
                    504, f"backend {endpoint.address}:{endpoint.port} did not accept in time"
                ) from None
            except OSError as exc:
                raise UpstreamFailed(
                    502,
                    f"backend {endpoint.address}:{endpoint.port} refused: {exc.strerror or exc}",
                ) from None
            try:
                backend.writer.write(out_head)
                if not bodyless:
                    await copy_body(
                        reader,
                        backend.writer.write,
                        backend.writer.drain,
                        framing,
                        self.settings.body_timeout,
                    )
                await backend.writer.drain()
                raw = await _read_head(backend.reader, self.settings.upstream_timeout)
            except TimeoutError:
                backend.close()
                raise UpstreamFailed(
                    504, f"backend {endpoint.address}:{endpoint.port} did not answer in time"
                ) from None
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                backend.close()
                # A pooled connection the backend closed meanwhile: one retry on a fresh one,
                # only when no request body was consumed.
                if reused and bodyless and attempt == 0:
                    continue
                raise UpstreamFailed(
                    502, f"backend {endpoint.address}:{endpoint.port} broke off: {exc}"
                ) from None
            except asyncio.LimitOverrunError:
                backend.close()
                raise UpstreamFailed(502, "backend response head too large") from None
            return backend, http1.parse_response_head(raw)
        raise UpstreamFailed(502, "backend unavailable")  # unreachable
