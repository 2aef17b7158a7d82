"""Backend connections for the relay: an asyncio Protocol each, pooled per endpoint.

A backend connection belongs to at most one client exchange at a time (its ``owner``) and
hands every event straight to it: bytes, backpressure, close. Between exchanges it waits in
the pool; one that the backend closes there (or that sends anything unasked) leaves the pool
at once, so a pooled connection is rarely stale when taken. When it is anyway (the close
crossed our request), the relay retries once on a fresh connection if no request body was
consumed. An upgraded connection (``tunnels``) is never pooled: it is the tunnel's until
it is closed, half-closed on the way when one side is done sending.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Protocol, cast

from ocsp_stapler.ingress.routes import Endpoint


class Owner(Protocol):
    """What an exchange must handle for the backend connection it holds."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_eof(self) -> bool:
        """The backend sends no more: True keeps the connection open for writing."""
        ...

    def upstream_lost(self, upstream: BackendConnection) -> None: ...
    def upstream_paused(self, paused: bool) -> None: ...


class BackendConnection(asyncio.Protocol):
    """One connection to a backend endpoint: lent to one exchange at a time, pooled between."""

    __slots__ = (
        "closed", "endpoint", "idle_since", "owner", "pool", "reading_paused", "transport",
        "writing_paused",
    )  # fmt: skip

    def __init__(self, endpoint: Endpoint, pool: ConnectionPool) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self.closed = False
        self.reading_paused = False
        self.writing_paused = False
        """The backend is not taking our bytes (its transport's buffer is full)."""
        self.idle_since = 0.0

    # asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner.upstream_data(data)
        else:  # nothing was asked: the connection is out of step, drop it
            self.abort()

    def eof_received(self) -> bool | None:
        if self.owner is not None:
            return self.owner.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.owner is not None:
            self.owner.upstream_paused(True)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.owner is not None:
            self.owner.upstream_paused(False)

    # ----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self, paused: bool) -> None:
        """Stop (or restart) reading while the client cannot take more."""
        if self.transport is None or self.closed or paused == self.reading_paused:
            return
        self.reading_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def release(self, reusable: bool) -> None:
        """The exchange is over: back to the pool (reading again, whatever the last client's
        pace was), or closed."""
        self.owner = None
        if reusable and not self.closed:
            self.pause_reading(False)
            self.pool.put(self)
        else:
            self.close()

    def write_eof(self) -> None:
        """Nothing more for the backend: a TCP half-close once the buffer is sent."""
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write_eof()

    def finish(self, flush_timeout: float) -> None:
        """Close once what is buffered for the backend is sent; a backend that does not take
        it within ``flush_timeout`` seconds is cut off rather than holding the connection."""
        transport = self.transport
        if transport is None or self.closed:
            self.owner = None
            return
        self.close()
        if transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(flush_timeout, transport.abort)

    def close(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()


class ConnectionPool:
    """Idle keep-alive connections per endpoint (a fresh connection when none is usable)."""

    def __init__(self, *, size: int, connect_timeout: float, max_idle: float = 30.0) -> None:
        self.size = size
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle: dict[Endpoint, list[BackendConnection]] = defaultdict(list)

    def take(self, endpoint: Endpoint) -> BackendConnection | None:
        """The most recently used idle connection to ``endpoint``, if one is still good."""
        stack = self.idle.get(endpoint)
        if not stack:
            return None
        now = time.monotonic()
        while stack:
            upstream = stack.pop()
            if not upstream.closed and now - upstream.idle_since < self.max_idle:
                return upstream
            upstream.close()
        return None

    async def connect(self, endpoint: Endpoint) -> BackendConnection:
        """A fresh connection (TimeoutError after ``connect_timeout``, OSError if refused)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: BackendConnection(endpoint, self), endpoint.address, endpoint.port
            )
        return protocol

    def put(self, upstream: BackendConnection) -> None:
        stack = self.idle[upstream.endpoint]
        if len(stack) >= self.size:
            upstream.close()
            return
        upstream.idle_since = time.monotonic()
        stack.append(upstream)

    def discard(self, upstream: BackendConnection) -> None:
        stack = self.idle.get(upstream.endpoint)
        if stack and upstream in stack:
            stack.remove(upstream)

    def close(self) -> None:
        for stack in self.idle.values():
            for upstream in stack:
                upstream.close()
        self.idle.clear()
