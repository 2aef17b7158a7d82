"""Byte tunnels for upgraded connections (WebSocket and any other HTTP/1.1 Upgrade).

Once a backend has answered 101 Switching Protocols, the connection carries no more HTTP: no
heads to parse, no framing to restate, no request or answer deadlines, no pooling. What is
left is a pipe between the client's TLS connection and the backend's TCP connection, with
rules of its own, and so a module of its own rather than more states in ``proxying``:

- Backpressure both ways, as the relay does for bodies: while the backend's send buffer is
  above its high-water mark the client's reads are paused, and while the client's is, the
  backend's. What the ingress holds per tunnel is bounded by those buffers and one read.
- An idle timeout: no byte either way for ``idle_timeout`` seconds closes both sides (a
  stalled reader stops all bytes, so it is cut off too). Checked by the worker's sweep.
- Half-closes are passed on: when one side is done sending (EOF), the other side's write side
  gets EOF once its buffer is flushed (a TCP FIN to the backend; close_notify and a FIN to the
  client), and the other direction flows on. When both sides are done, both are closed
  (still flushing, a bounded time). A reset or a lost connection aborts both.

Like the relay, a tunnel is callback-driven: it is the owner of its backend connection
(``upstreams.Owner``) and is fed the client's events by the session that switched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ocsp_stapler.ingress.upstreams import BackendConnection


class ClientSide(Protocol):
    """The client connection as a tunnel sees it (``worker.ClientConnection``)."""

    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self, paused: bool) -> None: ...


class Tunnel:
    """Client <-> backend bytes after a 101, until both sides are done or one breaks."""

    __slots__ = (
        "backend_done", "client", "client_done", "client_held", "clock", "deadline", "ended",
        "flush_timeout", "idle_timeout", "upstream",
    )  # fmt: skip

    def __init__(
        self,
        client: ClientSide,
        upstream: BackendConnection,
        *,
        clock: Callable[[], float],
        idle_timeout: float,
        flush_timeout: float,
        client_paused: bool,
        client_full: bool,
    ) -> None:
        """``client_paused``: the client's reads are paused now; ``client_full``: its send
        buffer is above the high-water mark now (both as the session left them)."""
        self.client = client
        self.upstream = upstream
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.flush_timeout = flush_timeout
        self.deadline = clock() + idle_timeout
        self.client_done = False
        """The client sends no more (EOF)."""
        self.backend_done = False
        """The backend sends no more (EOF)."""
        self.ended = False
        self.client_held = client_paused
        """The client's reads are paused (the backend is not taking our bytes)."""
        upstream.owner = self
        upstream.pause_reading(client_full)
        self._hold_client(upstream.writing_paused)

    # --------------------------------------------------------------- client -> backend

    def client_data(self, data: bytes) -> None:
        if self.ended or self.client_done:
            return
        self.upstream.write(data)
        self.deadline = self.clock() + self.idle_timeout

    def client_eof(self) -> None:
        if self.ended or self.client_done:
            return
        self.client_done = True
        if self.backend_done:
            self._end()
        else:
            self.upstream.write_eof()

    def client_paused(self, paused: bool) -> None:
        """The client's send buffer is full (or drained again): pause the backend's reads."""
        if not self.ended and not self.backend_done:
            self.upstream.pause_reading(paused)

    def client_lost(self) -> None:
        if not self.ended:
            self.ended = True
            self.upstream.abort()

    # --------------------------------------------------------------- backend -> client

    def upstream_data(self, data: bytes) -> None:
        if self.ended:
            return
        self.client.write(data)
        self.deadline = self.clock() + self.idle_timeout

    def upstream_eof(self) -> bool:
        if not self.ended and not self.backend_done:
            self.backend_done = True
            if self.client_done:
                self._end()
            else:
                self.client.write_eof()
        return True  # half-closed: what the client still sends goes on to the backend

    def upstream_paused(self, paused: bool) -> None:
        """The backend's send buffer is full (or drained again): pause the client's reads."""
        self._hold_client(paused)

    def upstream_lost(self, upstream: BackendConnection) -> None:
        if self.ended or upstream is not self.upstream:
            return
        if self.backend_done:  # it had finished sending: the client gets all of it, then a close
            self._end()
        else:
            self._abort()

    # ------------------------------------------------------------------------ endings

    def expire(self, now: float) -> None:
        """Called by the worker's sweep: no byte either way for ``idle_timeout`` closes."""
        if not self.ended and self.deadline < now:
            self._end()

    def _hold_client(self, paused: bool) -> None:
        if paused != self.client_held and not self.ended and not self.client_done:
            self.client_held = paused
            self.client.pause_reading(paused)

    def _end(self) -> None:
        self.ended = True
        self.upstream.finish(self.flush_timeout)
        self.client.close()

    def _abort(self) -> None:
        self.ended = True
        self.upstream.abort()
        self.client.abort()
