"""A recording stand-in for a transport, or for the TLS client connection a session writes to.

The relay's and the tunnel's state machines are driven event by event in tests (orders of
events that real peers produce only by timing); what they tell their transports is recorded
here, not checked against a script: the ProxySession, Tunnel and BackendConnection are the
real ones.
"""

from __future__ import annotations


class Recorder:
    """Records what it is told: bytes, half-close, close, abort, flow control."""

    def __init__(self) -> None:
        self.data = b""
        self.reading = True
        self.eof = self.closed = self.aborted = False

    @property
    def state(self) -> str:
        if self.aborted:
            return "aborted"
        return "closed" if self.closed else "half-closed" if self.eof else "open"

    # what a ProxySession or a Tunnel calls on its client, and a BackendConnection on its
    # transport
    def write(self, data: bytes) -> None:
        assert self.state == "open", f"written while {self.state}"
        self.data += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def linger(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self, paused: bool | None = None) -> None:
        """A client's ``pause_reading(paused)``, or a transport's ``pause_reading()``."""
        self.reading = paused is False

    def resume_reading(self) -> None:
        self.reading = True

    def take(self) -> bytes:
        """What was written since the last take."""
        out, self.data = self.data, b""
        return out
