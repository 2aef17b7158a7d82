"""Session-ticket keys shared by every worker, so a client resumes on whichever worker it reaches.

A TLS server encrypts each session ticket with its context's ticket key; a worker process
with a key of its own resumes only the clients it met itself, and SO_REUSEPORT spreads a
returning client over all workers. nginx shares one key between its workers by making it
before they fork; ours are exec'd, so the supervisor makes the key (``os.urandom``, 80
bytes: name, HMAC and AES keys), sends it to each worker over the control socket (memory
only: never written to disk, never logged) and replaces it on a schedule, which bounds
what a leaked key can decrypt (forward secrecy for resumed sessions).

Neither pyOpenSSL nor cryptography's bindings expose ``SSL_CTX_set_tlsext_ticket_keys``.
cryptography's wheel links OpenSSL statically and keeps the symbol table: ``SSL_CTX_ctrl``
(and ``SSL_CTX_set_num_tickets``) are there as local symbols. Their addresses are found
from the file's ELF symbol table and the load address of the exported ``PyInit__rust``, and
the result is proven before use: the key set on a scratch context must read back, byte for
byte. Anything unexpected (another wheel, a stripped build, another platform) makes the
mechanism unavailable, and the ingress goes on as before: full handshakes only, said once in
the log. OpenSSL holds one ticket key per context, so a rotation ends the resumption of the
tickets made before it (one full handshake per client per rotation).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.bindings import _rust
from OpenSSL import SSL
from OpenSSL._util import ffi

KEY_BYTES = 80
MAX_TICKET_LIFETIME = 604800
"""Seconds a ticket may live (RFC 8446 §4.6.1): the longest key rotation."""
"""16 bytes of key name, 32 of HMAC key, 32 of AES key (OpenSSL's layout)."""
_SET_KEYS, _GET_KEYS = 59, 58  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS / _GET_
_ANCHOR = "PyInit__rust"


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _symbols(path: Path, wanted: set[str]) -> dict[str, int]:
    """The values (addresses relative to the load base) of ``wanted`` in an ELF64
    little-endian file's .symtab; only what is found."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _symbols_in(data, wanted)  # mapped, not read: only what is looked at pages in


def _symbols_in(data: mmap.mmap, wanted: set[str]) -> dict[str, int]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    found: dict[str, int] = {}
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 2 or entsize != 24:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", data, at)
            if info & 0xF != 2 or shndx == 0:  # functions that are defined here
                continue
            end = data.find(b"\0", strings + name_at)
            name = data[strings + name_at : end].decode("ascii", "replace")
            if name in wanted:
                found[name] = value
    return found


class TicketKeyControl:
    """Sets the ticket key (and the number of TLS 1.3 tickets) on pyOpenSSL Contexts."""

    def __init__(self, ctrl: Callable[..., int], num_tickets: Callable[..., int] | None) -> None:
        self._ctrl = ctrl
        self._num_tickets = num_tickets

    @staticmethod
    def _pointer(context: Any) -> int:
        return int(ffi.cast("uintptr_t", context._context))

    def set_key(self, context: Any, key: bytes) -> bool:
        if len(key) != KEY_BYTES:
            return False
        buffer = ctypes.create_string_buffer(key, KEY_BYTES)
        return self._ctrl(self._pointer(context), _SET_KEYS, KEY_BYTES, buffer) == 1

    def get_key(self, context: Any) -> bytes:
        buffer = ctypes.create_string_buffer(KEY_BYTES)
        if self._ctrl(self._pointer(context), _GET_KEYS, KEY_BYTES, buffer) != 1:
            return b""
        return buffer.raw

    def set_ticket_count(self, context: Any, count: int) -> None:
        """How many TLS 1.3 tickets a full handshake sends: one instead of OpenSSL's two (a
        browser uses one), or none when tickets are off (without the shared key OpenSSL
        would still send "stateful" tickets that no session cache can resume)."""
        if self._num_tickets is not None:
            self._num_tickets(self._pointer(context), count)


@cache
def ticket_key_control() -> TicketKeyControl | None:
    """The control, proven on a scratch context; None where the mechanism is unavailable."""
    try:
        path = Path(_rust.__file__ or "")
        found = _symbols(
            path,
            {_ANCHOR, "SSL_CTX_ctrl", "SSL_CTX_set_num_tickets", "SSL_CTX_get_num_tickets"},
        )
        if _ANCHOR not in found or "SSL_CTX_ctrl" not in found:
            return None
        library = ctypes.CDLL(str(path))
        base = ctypes.cast(getattr(library, _ANCHOR), ctypes.c_void_p).value
        if base is None:
            return None
        base -= found[_ANCHOR]
        if base <= 0 or base % 4096:  # not a load address: the symbol table is not this file's
            return None
        ctrl = ctypes.CFUNCTYPE(
            ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p
        )(base + found["SSL_CTX_ctrl"])
        scratch = SSL.Context(SSL.TLS_SERVER_METHOD)
        control = TicketKeyControl(ctrl, _num_tickets(base, found, scratch))
        probe = new_key()
        if not control.set_key(scratch, probe) or control.get_key(scratch) != probe:
            return None
        return control
    except Exception:  # another wheel, platform or layout: full handshakes, as before
        return None


def _num_tickets(base: int, found: dict[str, int], scratch: Any) -> Callable[..., int] | None:
    """SSL_CTX_set_num_tickets, once a count set with it reads back through
    SSL_CTX_get_num_tickets (else OpenSSL's default of two tickets stays)."""
    if "SSL_CTX_set_num_tickets" not in found or "SSL_CTX_get_num_tickets" not in found:
        return None
    setter = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)(
        base + found["SSL_CTX_set_num_tickets"]
    )
    getter = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p)(
        base + found["SSL_CTX_get_num_tickets"]
    )
    pointer = TicketKeyControl._pointer(scratch)
    if getter(pointer) != 2 or setter(pointer, 3) != 1 or getter(pointer) != 3:
        return None
    return setter
