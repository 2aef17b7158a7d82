"""HTTP/1.1 message heads for the reverse proxy: strict parsing, hop-by-hop hygiene, framing.

Strict on purpose: a proxy that frames a request differently from its backend lets an
attacker smuggle a second request inside the first. So a request with both Content-Length and
Transfer-Encoding, with several differing Content-Lengths, with a Transfer-Encoding other than
a final ``chunked``, with obsolete line folding, or with a malformed header line is refused
with 400 and the connection is closed (RFC 9112 6.1, 6.3, 11.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


_NAME = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_BLOCK = re.compile(rb"(?:" + _NAME + rb":[ \t]*[^\r\n\x00]*\r\n)*")
"""A whole block of well-formed field lines (matched with ``fullmatch``: one pass in C)."""
_FIELD = re.compile(rb"(" + _NAME + rb"):[ \t]*((?:[^\r\n\x00]*[^\r\n\x00 \t])?)[ \t]*\r\n")


def _dropping(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """Removes the field lines with these names (any case) from a validated block."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"^(?:" + alternatives + rb"):[^\n]*\n", re.IGNORECASE | re.MULTILINE)


_REQUEST_DROP = HOP_BY_HOP | FORWARDED | {b"content-length", b"expect"}
"""Not forwarded: hop-by-hop fields, client-supplied X-Forwarded-* (ours replace them), the
length (restated from the framing) and Expect (the proxy answers 100-continue itself)."""
_RESPONSE_DROP = HOP_BY_HOP | {b"content-length"}
_DROP_FROM_REQUEST = _dropping(_REQUEST_DROP)
_DROP_FROM_RESPONSE = _dropping(_RESPONSE_DROP)
_PLAIN_TOKENS = frozenset({b"close", b"keep-alive"})


class Head:
    """A request or response head. Header names keep their case; lookups are lower-case.

    ``block`` keeps the field lines as received when the head was parsed: forwarding then
    cuts the hop-by-hop lines out of it with one regular expression instead of rebuilding
    every line (the relay's hottest path)."""

    __slots__ = ("block", "headers", "index", "start")

    def __init__(
        self,
        start: tuple[bytes, bytes, bytes],
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        block: bytes | None = None,
    ) -> None:
        self.start = start
        """(method, target, version) or (version, status, reason)."""
        self.headers = headers or []
        self.block = block
        index = {k.lower(): v for k, v in self.headers}
        self.index = index if len(index) == len(self.headers) else None
        """Lower-case name -> value, when no name repeats (else lookups scan ``headers``)."""

    def get(self, name: bytes) -> bytes | None:
        if self.index is not None:
            return self.index.get(name)
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        if self.index is not None:
            value = self.index.get(name)
            return [] if value is None else [value]
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


NO_BODY = Framing("none")
CHUNKED = Framing("chunked")
UNTIL_CLOSE = Framing("close")


def _parse_headers(lines: list[bytes], max_count: int) -> list[tuple[bytes, bytes]]:
    """Line by line, with a precise error: used when the fast check refused the block."""
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


def _split_head(raw: bytes, max_headers: int) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(start line, field block, fields) of a head ending with an empty line."""
    if not raw.endswith(b"\r\n\r\n"):
        raise BadMessage("incomplete head")
    end = raw.find(b"\r\n")
    line, block = raw[:end], raw[end + 2 : -2]
    if b"\n" in line or b"\r" in line:
        raise BadMessage("bare CR or LF in the head")
    if _FIELD_BLOCK.fullmatch(block) is None:
        lines = block[:-2].split(b"\r\n") if block else []
        if any(b"\n" in ln or b"\r" in ln for ln in lines):
            raise BadMessage("bare CR or LF in the head")
        _parse_headers(lines, max_headers)
        raise BadMessage("malformed header field")
    fields = _FIELD.findall(block)
    if len(fields) > max_headers:
        raise BadMessage(f"more than {max_headers} header fields", 431)
    return line, block, fields


def parse_request_head(raw: bytes, *, max_headers: int = 100) -> Head:
    line, block, fields = _split_head(raw, max_headers)
    parts = line.split(b" ")
    if len(parts) != 3:
        raise BadMessage("malformed request line")
    method, target, version = parts
    if not TOKEN.match(method):
        raise BadMessage("malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage("unsupported HTTP version", 505)
    if target[:1] == b"/" or (target == b"*" and method == b"OPTIONS"):
        head = Head((method, target, version), fields, block=block)
    else:
        head = _from_absolute_form(method, target, version, fields)
    hosts = head.get_all(b"host")
    if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
        raise BadMessage("exactly one Host header is required")
    return head


_ABSOLUTE = re.compile(rb"(?i)https?://([^/?#@\s]+)([/?][^#\s]*)?")


def _from_absolute_form(
    method: bytes, target: bytes, version: bytes, fields: list[tuple[bytes, bytes]]
) -> Head:
    """``GET http://host/path``: the target's authority replaces Host and the target becomes
    ``/path`` (RFC 9112 3.2.2), so routing and the backend see the same host."""
    found = _ABSOLUTE.fullmatch(target)
    if found is None:
        raise BadMessage("malformed request target")
    authority, rest = found[1], found[2] or b"/"
    origin = rest if rest[:1] == b"/" else b"/" + rest
    headers = [(k, v) for k, v in fields if k.lower() != b"host"] + [(b"Host", authority)]
    return Head((method, origin, version), headers)


def parse_response_head(raw: bytes, *, max_headers: int = 200) -> Head:
    line, block, fields = _split_head(raw, max_headers)
    parts = line.split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise BadMessage("malformed status line from the backend", 502)
    reason = parts[2] if len(parts) == 3 else b""
    return Head((parts[0], parts[1], reason), fields, block=block)


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
    values = head.get_all(b"transfer-encoding")
    if not values:
        return False
    codings = [c.strip().lower() for v in values for c in v.split(b",")]
    if codings != [b"chunked"]:
        raise BadMessage("unsupported Transfer-Encoding", 501)
    return True


def request_framing(head: Head) -> Framing:
    chunked = _chunked(head)
    length = _content_length(head)
    if chunked and length is not None:
        raise BadMessage("both Transfer-Encoding and Content-Length")
    if chunked:
        return CHUNKED
    if length:
        return Framing("length", length)
    return NO_BODY


def response_framing(head: Head, *, request_method: bytes) -> Framing:
    status = int(head.start[1])
    if request_method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return NO_BODY
    if _chunked(head):
        return CHUNKED
    length = _content_length(head)
    if length is not None:
        return Framing("length", length) if length else NO_BODY
    return UNTIL_CLOSE


def keep_alive(head: Head, version: bytes) -> bool:
    """Whether the connection may carry another message after this one (RFC 9112 9.3)."""
    if head.get(b"connection") is None:
        return version != b"HTTP/1.0"
    tokens = head.connection_tokens()
    if b"close" in tokens:
        return False
    if version == b"HTTP/1.0":
        return b"keep-alive" in tokens
    return True


def _kept_fields(
    head: Head, drop: frozenset[bytes], pattern: re.Pattern[bytes], tokens: set[bytes]
) -> bytes:
    """The head's field lines without the dropped names (and those Connection names)."""
    if head.block is not None and tokens <= _PLAIN_TOKENS:
        return pattern.sub(b"", head.block)
    names = drop | tokens
    return b"".join(k + b": " + v + b"\r\n" for k, v in head.headers if k.lower() not in names)


def _framing_field(framing: Framing) -> bytes:
    if framing.kind == "chunked":
        return b"Transfer-Encoding: chunked\r\n"
    if framing.kind == "length":
        return b"Content-Length: %d\r\n" % framing.length
    return b""


def forward_head(
    head: Head,
    *,
    client_ip: bytes,
    proto: bytes,
    framing: Framing,
    upgrade: bytes | None = None,
) -> bytes:
    """The request head to send upstream: hop-by-hop fields removed (and what Connection
    names), client-supplied X-Forwarded-* replaced by ours, framing restated, HTTP/1.1.
    With ``upgrade`` (from ``upgrade_offer``) the request asks the backend to switch to
    those protocols: ``Connection: upgrade`` and ``Upgrade`` are restated."""
    tokens = head.connection_tokens() if head.get(b"connection") is not None else set()
    kept = _kept_fields(head, _REQUEST_DROP, _DROP_FROM_REQUEST, tokens)
    method, target, _ = head.start
    forwarded = b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n" % (
        client_ip,
        proto,
        head.get(b"host") or b"",
    )
    switch = b"Connection: upgrade\r\nUpgrade: %s\r\n" % upgrade if upgrade else b""
    return b"%s %s HTTP/1.1\r\n%s%s%s%s\r\n" % (
        method,
        target,
        kept,
        switch,
        forwarded,
        _framing_field(framing),
    )


# --- Upgrade (RFC 9110 7.8) -----------------------------------------------------------------
# Connection and Upgrade are hop-by-hop, so an ordinary request loses them on the way; only a
# request that asks to switch protocols (and that the relay then tunnels if the backend agrees
# with 101) has them restated, with what the proxy will tunnel and nothing else.

NOT_TUNNELLED = frozenset({b"h2c", b"h2", b"http"})
"""Protocols never offered to a backend: h2c (and h2, HTTP/2.0, HTTP/3, which a client has no
business offering there) are a second HTTP that the proxy would pass unparsed, past its
request checks and routing (nginx does not pass h2c either). The request goes on as HTTP/1.1
without them. (``HTTP/1.1`` itself is no protocol to switch to: the same HTTP, unparsed.)"""


def _protocols(values: list[bytes], status: int) -> list[bytes]:
    """The protocols of Upgrade field values (``name["/"version]``, both tokens)."""
    found = []
    for value in values:
        for item in value.split(b","):
            protocol = item.strip(b" \t")
            if not protocol:
                continue
            name, slash, version = protocol.partition(b"/")
            if not TOKEN.match(name) or (slash and not TOKEN.match(version)):
                raise BadMessage("malformed Upgrade", status)
            found.append(protocol)
    return found


def upgrade_offer(head: Head) -> bytes | None:
    """The protocols an HTTP/1.1 request with ``Connection: upgrade`` asks to switch to, as
    the Upgrade value to forward (``NOT_TUNNELLED`` left out); None for an ordinary request.
    An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8); a malformed one is a BadMessage
    (400)."""
    if head.start[2] != b"HTTP/1.1" or head.get(b"connection") is None:
        return None
    if b"upgrade" not in head.connection_tokens():
        return None
    offered = _protocols(head.get_all(b"upgrade"), 400)
    kept = [p for p in offered if p.partition(b"/")[0].lower() not in NOT_TUNNELLED]
    return b", ".join(kept) or None


def switched_head(head: Head, *, offered: bytes) -> bytes:
    """The client's 101 head: the backend's fields without hop-by-hop ones, ``Connection:
    upgrade`` and the backend's Upgrade restated. BadMessage(502) when the backend names no
    protocol, or one the client did not offer (RFC 9110 15.2.2: it must not)."""
    chosen = _protocols(head.get_all(b"upgrade"), 502)
    if not chosen:
        raise BadMessage("the backend switched protocols without naming one", 502)
    allowed = {p.lower() for p in _protocols([offered], 502)}
    if any(p.lower() not in allowed for p in chosen):
        raise BadMessage("the backend switched to a protocol that was not offered", 502)
    tokens = head.connection_tokens() if head.get(b"connection") is not None else set()
    kept = _kept_fields(head, _RESPONSE_DROP, _DROP_FROM_RESPONSE, tokens)
    return b"HTTP/1.1 101 %s\r\n%sConnection: upgrade\r\nUpgrade: %s\r\n\r\n" % (
        head.start[2],
        kept,
        b", ".join(chosen),
    )


def response_head(
    head: Head, framing: Framing, *, keep: bool, to_head_request: bool = False
) -> bytes:
    """The response head for the client: HTTP/1.1, hop-by-hop fields removed, framing and
    Connection restated (an answer to HEAD keeps the length the backend announced)."""
    tokens = head.connection_tokens() if head.get(b"connection") is not None else set()
    kept = _kept_fields(head, _RESPONSE_DROP, _DROP_FROM_RESPONSE, tokens)
    status = head.start[1]
    field = _framing_field(framing)
    if framing.kind == "close":
        field, keep = b"", False
    elif (
        framing.kind == "none"
        and status not in (b"204", b"304")
        and head.get(b"content-length") is not None
    ):
        length = (_content_length(head) or 0) if to_head_request else 0
        field = b"Content-Length: %d\r\n" % length
    connection = b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n"
    return b"HTTP/1.1 %s %s\r\n%s%s%s\r\n" % (status, head.start[2], kept, field, connection)


# --- Fast paths -----------------------------------------------------------------------------
# Most requests carry no body and no hop-by-hop field, and most responses say only their length
# and keep-alive. For those, the two functions below validate the head with a few regular
# expressions (one pass each, in C) and build the forwarded head from the received bytes,
# with a handful of Python calls where the general path makes about a hundred. Anything else
# (a body, Connection tokens, HTTP/1.0, chunking, a repeated field, ...) returns None and takes
# the general path above; both produce the same bytes where both apply (tests/ingress).


def _interesting(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """Finds the field lines with these names in a validated block: (name, value) each."""
    alternatives = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(
        rb"^(" + alternatives + rb"):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r$",
        re.IGNORECASE | re.MULTILINE,
    )


_REQUEST_FIELDS = _interesting(_REQUEST_DROP | {b"host"})
_RESPONSE_FIELDS = _interesting(_RESPONSE_DROP)
_PLAIN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"})


def fast_request(
    raw: bytes, *, client_ip: bytes, proto: bytes, max_headers: int
) -> tuple[bytes, bytes, bytes, bytes] | None:
    """(method, target, host, head to forward) for a plain HTTP/1.1 request without a body
    whose only special field is Host; None for anything else."""
    end = raw.find(b"\r\n")
    line = raw[:end]
    parts = line.split(b" ")
    if len(parts) != 3 or b"\r" in line or b"\n" in line:
        return None
    method, target, version = parts
    if version != b"HTTP/1.1" or method not in _PLAIN_METHODS or target[:1] != b"/":
        return None
    block = raw[end + 2 : -2]
    if block.count(b"\n") > max_headers or _FIELD_BLOCK.fullmatch(block) is None:
        return None
    special = _REQUEST_FIELDS.findall(block)
    if len(special) != 1 or special[0][0].lower() != b"host":
        return None
    host = special[0][1]
    return (
        method,
        target,
        host,
        b"%s %s HTTP/1.1\r\n%sX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n"
        b"X-Forwarded-Host: %s\r\n\r\n" % (method, target, block, client_ip, proto, host),
    )


def fast_response(
    raw: bytes, *, request_method: bytes, keep: bool
) -> tuple[int, bytes, int, bool] | None:
    """(status, head for the client, body length, whether the backend keeps the connection)
    for an HTTP/1.1 response framed by one Content-Length; None for anything else."""
    end = raw.find(b"\r\n")
    line = raw[:end]
    parts = line.split(b" ", 2)
    if len(parts) != 3 or parts[0] != b"HTTP/1.1" or b"\r" in line or b"\n" in line:
        return None
    status_text = parts[1]
    if len(status_text) != 3 or not status_text.isdigit() or request_method == b"HEAD":
        return None
    status = int(status_text)
    block = raw[end + 2 : -2]
    if (
        status < 200
        or status in (204, 304)
        or block.count(b"\n") > 200
        or _FIELD_BLOCK.fullmatch(block) is None
    ):
        return None
    length_text, backend_keep = b"", True
    for name, value in _RESPONSE_FIELDS.findall(block):
        lower = name.lower()
        if lower == b"content-length" and not length_text:
            length_text = value
        elif lower == b"connection" and value.lower() in _PLAIN_TOKENS:
            backend_keep = backend_keep and value.lower() != b"close"
        elif lower in (b"content-length", b"connection", b"transfer-encoding"):
            return None  # repeated lengths, Connection tokens or chunking: the general path
        # other hop-by-hop fields (Keep-Alive, Upgrade, ...) are simply cut below
    if not length_text.isdigit() or len(length_text) > 18:
        return None
    length = int(length_text)
    connection = b"Connection: keep-alive\r\n" if keep else b"Connection: close\r\n"
    kept = _DROP_FROM_RESPONSE.sub(b"", block)
    head = b"HTTP/1.1 %s %s\r\n%sContent-Length: %d\r\n%s\r\n" % (
        status_text,
        parts[2],
        kept,
        length,
        connection,
    )
    return status, head, length, backend_keep


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
