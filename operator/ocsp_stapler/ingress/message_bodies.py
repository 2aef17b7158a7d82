"""Incremental HTTP/1.1 body framing for the relay: bytes in as they arrive, bytes out re-framed.

The relay is callback-driven (no coroutine per request), so a body is not "read" but fed,
piece by piece, to one of these decoders. Each returns the bytes to forward (a chunked body
re-encoded with its trailers dropped, so what the next hop sees is framed by us, never by
the sender's quirks) and how much of the input belonged to the body; ``done`` turns true at
its end. Anything after the end is the next message, which the caller keeps.

Malformed chunked framing raises ``http1.BadMessage``: the relay then closes, because it
cannot know where the next message would start.
"""

from __future__ import annotations

from ocsp_stapler.ingress.http1 import BadMessage, Framing

MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (with extensions) or trailer line accepted."""
MAX_TRAILERS = 16 * 1024


class MessageBody:
    """The body of an HTTP message in transit, fed as it arrives (not a Secret's body). This
    base one has nothing in it (framing "none"): done before the first byte."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = True

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """(bytes to forward, how many bytes of ``data`` were body)."""
        return b"", 0

    def end(self) -> bool:
        """The sender closed: True when that ends the body properly."""
        return self.done


class LengthBody(MessageBody):
    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> tuple[bytes, int]:
        n = len(data)
        if n < self.remaining:
            self.remaining -= n
            return data, n
        n = self.remaining
        self.remaining = 0
        self.done = True
        return (data if n == len(data) else data[:n]), n


class UntilCloseBody(MessageBody):
    """A response without length or chunking: it ends when the backend closes."""

    __slots__ = ()

    def __init__(self) -> None:
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, int]:
        return data, len(data)

    def end(self) -> bool:
        self.done = True
        return True


_SIZE, _DATA, _DATA_END, _TRAILERS = 0, 1, 2, 3


class ChunkedBody(MessageBody):
    """Chunked transfer coding (RFC 9112 7.1), parsed strictly and re-encoded (or, for a
    client that cannot read chunks, decoded to the plain body)."""

    __slots__ = ("line", "reencode", "remaining", "state", "trailer_bytes")

    def __init__(self, *, reencode: bool = True) -> None:
        self.reencode = reencode
        self.done = False
        self.state = _SIZE
        self.line = bytearray()
        self.remaining = 0
        self.trailer_bytes = 0

    def feed(self, data: bytes) -> tuple[bytes, int]:  # noqa: PLR0912 (one state machine)
        out: list[bytes] = []
        pos, n = 0, len(data)
        while pos < n and not self.done:
            state = self.state
            if state == _DATA:
                take = min(self.remaining, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _DATA_END
                continue
            # The line states: gather up to CRLF.
            end = data.find(b"\n", pos)
            stop = n if end < 0 else end + 1
            self.line += data[pos:stop]
            pos = stop
            if len(self.line) > MAX_CHUNK_LINE:
                raise BadMessage("chunk size line too long")
            if end < 0:
                continue
            line = bytes(self.line)
            self.line.clear()
            if not line.endswith(b"\r\n"):
                raise BadMessage("bare LF in chunked framing")
            if state == _DATA_END:
                if line != b"\r\n":
                    raise BadMessage("malformed chunk")
                if self.reencode:
                    out.append(b"\r\n")
                self.state = _SIZE
            elif state == _SIZE:
                size = _chunk_size(line)
                if size:
                    if self.reencode:
                        out.append(b"%x\r\n" % size)
                    self.remaining = size
                    self.state = _DATA
                else:
                    self.state = _TRAILERS
            else:  # trailers: dropped, up to the empty line
                self.trailer_bytes += len(line)
                if self.trailer_bytes > MAX_TRAILERS:
                    raise BadMessage("trailers too large")
                if line == b"\r\n":
                    if self.reencode:
                        out.append(b"0\r\n\r\n")
                    self.done = True
        return b"".join(out), pos

    def end(self) -> bool:
        return False


def _chunk_size(line: bytes) -> int:
    text = line[:-2].split(b";", 1)[0].strip(b" \t")
    if not text or len(text) > 15 or text.strip(b"0123456789abcdefABCDEF"):
        raise BadMessage("malformed chunk size")
    return int(text, 16)


NOTHING = MessageBody()
"""The empty body (stateless, so shared)."""


def decoder(framing: Framing) -> MessageBody:
    if framing.kind == "length":
        return LengthBody(framing.length)
    if framing.kind == "chunked":
        return ChunkedBody()
    if framing.kind == "close":
        return UntilCloseBody()
    return NOTHING
