"""The server name a TLS ClientHello asks for, read before OpenSSL sees the connection.

OpenSSL decides whether a session ticket resumes *before* it calls the SNI callback: the
ticket is checked against the session-id context of the Context the Connection was made
with, not against the one SNI then picks. A Connection made on one Context for every client
would resume a ticket of one host under another's name (TLS 1.3 does not bind SNI to the
session) and never resume any other host's. So the worker reads the name first, from the
ClientHello's first record, and makes the Connection on that host's Context; OpenSSL parses
the same bytes again and stays the judge of them (a name read wrongly here can only cost a
full handshake: see ``CertificateStore.new_connection``).

The bytes are a client's: every length is checked against what is there, and anything
unexpected (not a handshake record, a ClientHello longer than its record, a truncated or
inconsistent field) is "no name read", never an exception.
"""

from __future__ import annotations

RECORD_HEADER = 5
MAX_RECORD = RECORD_HEADER + 16384
"""A plaintext record's largest size (RFC 8446 §5.1): the ClientHello's record is one."""
_HANDSHAKE, _CLIENT_HELLO, _SERVER_NAME, _HOST_NAME = 22, 1, 0, 0


def record_length(data: bytes) -> int | None:
    """The size of the first record (header included) once its header is in ``data``: 0 while
    fewer than 5 bytes arrived; None when it is no TLS handshake record."""
    if len(data) < RECORD_HEADER:
        return 0
    if data[0] != _HANDSHAKE or data[1] != 3:
        return None
    return RECORD_HEADER + int.from_bytes(data[3:5], "big")


def server_name(record: bytes) -> bytes | None:
    """The host_name of the server_name extension in this first record's ClientHello, b""
    when it has none; None when the bytes are not a ClientHello held whole by the record (or
    its server_name is malformed)."""
    end, pos = len(record), RECORD_HEADER + 4
    if end < pos or record[RECORD_HEADER] != _CLIENT_HELLO or _after(record, pos - 3, 3) != end:
        return None  # not a ClientHello, split over records, or trailing bytes: OpenSSL decides
    pos += 2 + 32  # legacy_version, random
    for width in (1, 2, 1):  # legacy_session_id, cipher_suites, legacy_compression_methods
        pos = _after(record, pos, width)
        if pos < 0:
            return None
    if _after(record, pos, 2) != end:  # the extensions run to the end
        return None
    pos += 2
    while pos + 4 <= end:
        kind = int.from_bytes(record[pos : pos + 2], "big")
        size = int.from_bytes(record[pos + 2 : pos + 4], "big")
        pos += 4
        if pos + size > end:
            return None
        if kind == _SERVER_NAME:
            return _host_name(record[pos : pos + size])
        pos += size
    return b"" if pos == end else None


def _after(data: bytes, pos: int, width: int) -> int:
    """Where the vector at ``pos`` with a ``width``-byte length ends; -1 past ``data``'s end."""
    if pos + width > len(data):
        return -1
    after = pos + width + int.from_bytes(data[pos : pos + width], "big")
    return after if after <= len(data) else -1


def _host_name(ext: bytes) -> bytes | None:
    """The one host_name of a ServerNameList (RFC 6066 §3: at most one of each type)."""
    if len(ext) < 5 or int.from_bytes(ext[0:2], "big") != len(ext) - 2 or ext[2] != _HOST_NAME:
        return None
    size = int.from_bytes(ext[3:5], "big")
    if size == 0 or 5 + size != len(ext):
        return None
    return ext[5 : 5 + size]
