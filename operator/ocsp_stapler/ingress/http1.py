"""HTTP/1.1 message heads for the reverse proxy: strict parsing, hop-by-hop hygiene, framing.

Strict on purpose: a proxy that frames a request differently from its backend lets an
attacker smuggle a second request inside the first. So a request with both Content-Length and
Transfer-Encoding, with several differing Content-Lengths, with a Transfer-Encoding other than
a final ``chunked``, with obsolete line folding, or with a malformed header line is refused
with 400 and the connection is closed (RFC 9112 6.1, 6.3, 11.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})


class BadMessage(ValueError):
    """The message cannot be proxied safely; ``status`` is what the client gets."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Head:
    """A request or response head. Header names keep their case; lookups are lower-case."""

    start: tuple[bytes, bytes, bytes]
    """(method, target, version) or (version, status, reason)."""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def get(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def connection_tokens(self) -> set[bytes]:
        tokens: set[bytes] = set()
        for value in self.get_all(b"connection"):
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
        return tokens


@dataclass(frozen=True)
class Framing:
    """How a body is delimited: a length, chunked, until close, or none."""

    kind: str  # "length" | "chunked" | "close" | "none"
    length: int = 0


def _parse_headers(lines: list[bytes], max_count: int) -> list[tuple[bytes, bytes]]:
    if len(lines) > max_count:
        raise BadMessage(f"more than {max_count} header fields", 431)
    headers = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise BadMessage("obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN.match(name):
            raise BadMessage("malformed header field")
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise BadMessage("control character in a header value")
        headers.append((name, value))
    return headers


def _split_head(raw: bytes) -> list[bytes]:
    if not raw.endswith(b"\r\n\r\n"):
        raise BadMessage("incomplete head")
    lines = raw[:-4].split(b"\r\n")
    if any(b"\n" in ln or b"\r" in ln for ln in lines):
        raise BadMessage("bare CR or LF in the head")
    return lines


def parse_request_head(raw: bytes, *, max_headers: int = 100) -> Head:
    lines = _split_head(raw)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadMessage("malformed request line")
    method, target, version = parts
    if not TOKEN.match(method):
        raise BadMessage("malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage("unsupported HTTP version", 505)
    if not target or (target[:1] != b"/" and target != b"*" and not target.startswith(b"http")):
        raise BadMessage("malformed request target")
    head = Head(start=(method, target, version), headers=_parse_headers(lines[1:], max_headers))
    hosts = head.get_all(b"host")
    if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
        raise BadMessage("exactly one Host header is required")
    return head


def parse_response_head(raw: bytes, *, max_headers: int = 200) -> Head:
    lines = _split_head(raw)
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadMessage("malformed status line from the backend", 502)
    reason = parts[2] if len(parts) == 3 else b""
    return Head(start=(parts[0], parts[1], reason), headers=_parse_headers(lines[1:], max_headers))


def _content_length(head: Head) -> int | None:
    values = head.get_all(b"content-length")
    if not values:
        return None
    lengths = {v.strip() for value in values for v in value.split(b",")}
    if len(lengths) != 1:
        raise BadMessage("conflicting Content-Length")
    (text,) = lengths
    if not text.isdigit() or len(text) > 18:
        raise BadMessage("malformed Content-Length")
    return int(text)


def _chunked(head: Head) -> bool:
    codings = [c.strip().lower() for v in head.get_all(b"transfer-encoding") for c in v.split(b",")]
    if not codings:
        return False
    if codings != [b"chunked"]:
        raise BadMessage("unsupported Transfer-Encoding", 501)
    return True


def request_framing(head: Head) -> Framing:
    chunked = _chunked(head)
    length = _content_length(head)
    if chunked and length is not None:
        raise BadMessage("both Transfer-Encoding and Content-Length")
    if chunked:
        return Framing("chunked")
    if length:
        return Framing("length", length)
    return Framing("none")


def response_framing(head: Head, *, request_method: bytes) -> Framing:
    status = int(head.start[1])
    if request_method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return Framing("none")
    if _chunked(head):
        return Framing("chunked")
    length = _content_length(head)
    if length is not None:
        return Framing("length", length) if length else Framing("none")
    return Framing("close")


def keep_alive(head: Head, version: bytes) -> bool:
    """Whether the connection may carry another message after this one (RFC 9112 9.3)."""
    tokens = head.connection_tokens()
    if b"close" in tokens:
        return False
    if version == b"HTTP/1.0":
        return b"keep-alive" in tokens
    return True


def forward_headers(
    head: Head, *, client_ip: str, proto: bytes, framing: Framing
) -> list[tuple[bytes, bytes]]:
    """The request headers to send upstream: hop-by-hop removed (and what Connection names),
    client-supplied X-Forwarded-* replaced by ours, framing restated."""
    drop = HOP_BY_HOP | FORWARDED | head.connection_tokens() | {b"content-length"}
    out = [(k, v) for k, v in head.headers if k.lower() not in drop]
    host = head.get(b"host") or b""
    out += [
        (b"X-Forwarded-For", client_ip.encode()),
        (b"X-Forwarded-Proto", proto),
        (b"X-Forwarded-Host", host),
    ]
    if framing.kind == "chunked":
        out.append((b"Transfer-Encoding", b"chunked"))
    elif framing.kind == "length":
        out.append((b"Content-Length", str(framing.length).encode()))
    return out


def response_headers(head: Head, framing: Framing, *, keep: bool) -> list[tuple[bytes, bytes]]:
    drop = HOP_BY_HOP | head.connection_tokens() | {b"content-length"}
    out = [(k, v) for k, v in head.headers if k.lower() not in drop]
    if framing.kind == "chunked":
        out.append((b"Transfer-Encoding", b"chunked"))
    elif framing.kind == "length":
        out.append((b"Content-Length", str(framing.length).encode()))
    elif framing.kind == "close":
        keep = False
    elif int(head.start[1]) not in (204, 304) and head.get(b"content-length") is not None:
        out.append((b"Content-Length", b"0"))
    out.append((b"Connection", b"keep-alive" if keep else b"close"))
    return out


def serialize(start: tuple[bytes, bytes, bytes], headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b" ".join(start)] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


REASONS = {
    200: b"OK",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def simple_response(
    status: int,
    message: str,
    *,
    close: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A small text response generated by the proxy itself (errors, redirects)."""
    body = (message + "\n").encode()
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close" if close else b"keep-alive"),
        *(extra or []),
    ]
    return serialize((b"HTTP/1.1", str(status).encode(), REASONS.get(status, b"")), headers) + body
