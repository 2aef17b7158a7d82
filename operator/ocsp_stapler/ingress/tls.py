"""TLS termination with pyOpenSSL: a Context per certificate version, SNI, OCSP stapling.

The only module of the package that imports OpenSSL. pyOpenSSL (26+) refuses changes to a
Context once it made a Connection, so a certificate change builds a *new* Context and the SNI
callback picks it for new handshakes; open connections keep theirs. A staple change only swaps
the bytes in the certificate's ``Staple`` holder, which the OCSP callback reads per handshake,
so new handshakes staple the new response at once.

The OCSP callback runs only when the client asked (status_request). It serves the held staple
if it has not expired by the clock; else nothing. For must-staple certificates under the
``strict`` policy, a handshake without a valid staple is refused (the SNI callback switches to
a Context without any certificate, so OpenSSL aborts the handshake).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from OpenSSL import SSL

from ocsp_stapler.ingress import client_hello
from ocsp_stapler.ingress.ticket_keys import KEY_BYTES, ticket_key_control
from ocsp_stapler.ocsp.chains import must_staple

SERVED, NOT_SERVED, NOT_REQUESTED, RESUMED = "served", "not_served", "not_requested", "resumed"
# No ALPN callback: without an ALPN answer clients speak HTTP/1.1, which is all we serve, and
# a Python callback less per handshake is measurably cheaper (see bench/results.md).
# Mozilla's "intermediate" configuration (v5.7), and like it the client's order decides: all
# are forward secret AEADs; AES-128-GCM with SHA-256 first (a transcript hash that SHA-NI runs,
# unlike SHA-384: measurably cheaper handshakes), ChaCha20 for clients without AES hardware.
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
_TLS13_CIPHERSUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


class Staple:
    """The staple currently served for one certificate (replaced in place on updates)."""

    __slots__ = ("der", "expires_at")

    def __init__(self, der: bytes = b"", expires_at: float = 0.0) -> None:
        self.der = der
        self.expires_at = expires_at

    def valid(self, now: float) -> bool:
        return bool(self.der) and now < self.expires_at


@dataclass
class CertEntry:
    id: str
    version: str
    context: SSL.Context
    staple: Staple
    must_staple: bool
    hosts: tuple[str, ...]


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))


def _hosts_of(certs: Mapping[str, Any], ids: list[str]) -> list[Any]:
    found: list[Any] = []
    for cert_id in ids:
        entry = certs.get(cert_id) if isinstance(cert_id, str) else None
        hosts = entry.get("hosts") if isinstance(entry, Mapping) else None
        if isinstance(hosts, list):
            found.extend(hosts)
    return found


def base_context(*, tickets: bool) -> SSL.Context:
    """A server Context with the ingress's protocol settings and no certificate. A
    Connection takes its options from the Context it is made with, whichever one SNI
    switches it to later, so every Context a Connection can start on is made here."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    ctx.set_cipher_list(_CIPHERS)
    ctx.set_tls13_ciphersuites(_TLS13_CIPHERSUITES)
    # No session cache: a worker's cache would resume only the clients it met itself (and
    # grow with them); resumption is by tickets, whose key all workers share. Without that
    # key, full handshakes only.
    if not tickets:
        ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    control = ticket_key_control()
    if control is not None:
        control.set_ticket_count(ctx, 1 if tickets else 0)
    return ctx


def server_context(
    chain_pem: bytes, key_pem: bytes, *, tickets: bool = False
) -> tuple[SSL.Context, x509.Certificate]:
    """A server Context holding this chain and key (no callbacks yet), and the leaf; with
    ``tickets``, session tickets are on (the caller sets the shared key: ``ticket_keys``).

    The supervisor builds one too, as a trial, before it publishes a certificate: what OpenSSL
    refuses (a key that does not fit, one too weak for its security level) is then reported
    once for the Secret instead of being found by every worker."""
    certs = x509.load_pem_x509_certificates(chain_pem)
    # Skipping the RSA consistency check saves ~50 ms per key (per worker, per version): the
    # supervisor has checked that the key is the certificate's, and OpenSSL checks it again.
    key = serialization.load_pem_private_key(
        key_pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    ctx = base_context(tickets=tickets)
    ctx.use_certificate(certs[0])
    for extra in certs[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)  # type: ignore[arg-type]
    ctx.check_privatekey()
    return ctx, certs[0]


class ConnectionOwner:
    """What the callbacks of a Connection report to its owner (the worker's
    ``ClientConnection`` has the same attributes)."""

    __slots__ = ("hellos", "refused", "staple")

    def __init__(self) -> None:
        self.staple = NOT_REQUESTED
        """SERVED / NOT_SERVED once the OCSP callback ran."""
        self.hellos = 0
        """ClientHellos the SNI callback saw (two after a HelloRetryRequest)."""
        self.refused = False
        """The handshake must not be used, whatever OpenSSL concludes."""


class CertificateStore:
    """All certificates a worker serves, and the SNI and OCSP callbacks over them."""

    def __init__(
        self, *, must_staple_policy: str = "lenient", clock: Callable[[], float] = time.time
    ) -> None:
        self.strict = must_staple_policy == "strict"
        self.clock = clock
        self.entries: dict[str, CertEntry] = {}
        self.exact: dict[str, CertEntry] = {}
        self.wildcard: dict[str, CertEntry] = {}
        self.default: CertEntry | None = None
        self._refuse = base_context(tickets=False)  # no certificate: the handshake fails
        self._lobby = base_context(tickets=False)
        """Where a connection starts whose ClientHello could not be read first: SNI picks
        its certificate, and it never resumes (its session-id context is no host's)."""
        self._lobby.set_tlsext_servername_callback(self._on_servername)
        self.ticket_key = b""
        """The workers' shared session-ticket key; empty: no tickets (full handshakes)."""
        self.ticket_lifetime = 0.0

    def set_ticket_key(self, key: bytes, lifetime: float) -> bool:
        """Use this session-ticket key from now on, for every certificate (the tickets made
        under the previous one no longer resume); ``lifetime``: the seconds until the next
        key, told to clients as the ticket's lifetime. False (and no tickets) when OpenSSL
        cannot be given the key here."""
        control = ticket_key_control()
        if control is None or len(key) != KEY_BYTES:
            return False
        self.ticket_key, self.ticket_lifetime = key, lifetime
        for entry in self.entries.values():
            control.set_key(entry.context, key)
        return True

    # ------------------------------------------------------------ configuration updates

    def _context(
        self, entry_staple: Staple, chain_pem: bytes, key_pem: bytes
    ) -> tuple[SSL.Context, bool]:
        control = ticket_key_control() if self.ticket_key else None
        ctx, leaf = server_context(chain_pem, key_pem, tickets=control is not None)
        ctx.set_tlsext_servername_callback(self._on_servername)
        ctx.set_ocsp_server_callback(self._on_status, data=entry_staple)
        if control is not None:
            control.set_key(ctx, self.ticket_key)
            ctx.set_timeout(max(1, int(self.ticket_lifetime)))
            # A session resumes only for the certificate (and version) it was made with:
            # OpenSSL compares this id with the Context the Connection was made on, which
            # new_connection picks from the ClientHello's name, so a ticket for one host
            # never resumes on another, nor after the certificate changed.
            ctx.set_session_id(hashlib.sha256(leaf.fingerprint(hashes.SHA256())).digest()[:32])
        return ctx, must_staple(leaf)

    def apply(
        self, certs: Mapping[str, Any], default_id: str | None, unbound: Any = ()
    ) -> list[str]:
        """Install a snapshot of certificates; return the ids that could not be loaded.

        Each entry serves the hosts the supervisor bound to it (``claims``: names its
        certificate covers, held by its namespace); an ``unbound`` host gets the default
        certificate rather than another namespace's wildcard. Each entry is on its own: one
        that cannot be used (whatever OpenSSL, cryptography or the entry's own shape raises)
        is left out and the others are installed as usual."""
        failed: list[str] = []
        entries: dict[str, CertEntry] = {}
        for cert_id, c in certs.items():
            try:
                entries[cert_id] = self._entry(cert_id, c)
            except Exception:  # one tenant's certificate never ends the others'
                failed.append(str(cert_id))
        exact: dict[str, CertEntry] = {}
        wildcard: dict[str, CertEntry] = {}
        for entry in sorted(entries.values(), key=lambda e: e.id):
            for host in entry.hosts:
                if host.startswith("*."):
                    wildcard.setdefault(host[1:], entry)
                else:
                    exact.setdefault(host, entry)
        default = entries.get(default_id) if isinstance(default_id, str) else None
        default = default or next(iter(entries.values()), None)
        if default is not None:
            # The hosts of an entry that failed to load are its namespace's: they get the
            # default certificate too, not whichever wildcard of another namespace is left.
            for host in [
                *_hosts_of(certs, failed),
                *(unbound if isinstance(unbound, list) else ()),
            ]:
                if isinstance(host, str) and host.startswith("*."):
                    wildcard.setdefault(host[1:], default)
                elif isinstance(host, str):
                    exact.setdefault(host, default)
        self.entries, self.exact, self.wildcard = entries, exact, wildcard
        self.default = default
        return failed

    def _entry(self, cert_id: str, c: Mapping[str, Any]) -> CertEntry:
        try:
            staple_der = c.get("staple")
            der = bytes.fromhex(staple_der) if staple_der else b""
            expires_at = float(c.get("staple_expires") or 0.0)
        except (TypeError, ValueError):  # an unreadable staple: the certificate, unstapled
            der, expires_at = b"", 0.0
        hosts = tuple(str(h).lower() for h in c.get("hosts") or ())
        current = self.entries.get(cert_id)
        if current is not None and current.version == c["version"]:
            entry = current
            entry.hosts = hosts  # an Ingress may bind other names to the same certificate
        else:
            staple = Staple()
            ctx, strict_cert = self._context(staple, c["chain"].encode(), c["key"].encode())
            entry = CertEntry(cert_id, c["version"], ctx, staple, strict_cert, hosts)
        # Swap the bytes in place: contexts built earlier keep pointing at this holder.
        entry.staple.der, entry.staple.expires_at = der, expires_at
        return entry

    # ----------------------------------------------------------------- per connection

    def new_connection(self, owner: object, hello: bytes | None) -> SSL.Connection | None:
        """A server-side Connection over memory BIOs, made on the Context of the host that
        ``hello`` (the first record from the client) names, so that OpenSSL checks a session
        ticket against that host's session-id context. ``owner`` (a ``ConnectionOwner``)
        learns from the callbacks whether a staple was served, and whether the handshake
        must be refused even though OpenSSL completes it."""
        if self.default is None:
            return None
        name = client_hello.server_name(hello) if hello else None
        if name is None:
            ctx = self._lobby
        else:
            entry = self.lookup(name)
            ctx = self._refuse if entry is None or self._refused(entry) else entry.context
        conn = SSL.Connection(ctx, None)
        conn.set_accept_state()
        conn.set_app_data(owner)
        return conn

    def lookup(self, server_name: bytes | None) -> CertEntry | None:
        if server_name:
            name = server_name.decode("ascii", "replace").lower().rstrip(".")
            entry = self.exact.get(name)
            if entry is not None:
                return entry
            dot = name.find(".")
            if dot > 0:
                entry = self.wildcard.get(name[dot:])
                if entry is not None:
                    return entry
        return self.default

    def _refused(self, entry: CertEntry) -> bool:
        return self.strict and entry.must_staple and not entry.staple.valid(self.clock())

    def _on_servername(self, conn: SSL.Connection) -> None:
        current, state = conn.get_context(), conn.get_app_data()
        state.hellos += 1
        if current is not self._lobby and state.hellos == 1:
            # new_connection picked the Context from this very ClientHello (and OpenSSL
            # accepted a ticket, if any, for it); in a TLS 1.2 resumption OpenSSL would now
            # report the session's own name, which must not move the connection.
            return
        entry = self.lookup(conn.get_servername())
        if current is self._lobby:
            if entry is None or self._refused(entry):
                conn.set_context(self._refuse)
            else:
                conn.set_context(entry.context)
            return
        # The second ClientHello, after a HelloRetryRequest (TLS 1.3): OpenSSL checked its
        # ticket against the first one's host, so it must name that host, which must still
        # be served. Otherwise the handshake is refused; a resumption needs no certificate,
        # so the connection is told (``refused``) and aborted once OpenSSL is done.
        if entry is None or entry.context is not current or self._refused(entry):
            state.refused = True
            conn.set_context(self._refuse)

    def _on_status(self, conn: SSL.Connection, staple: Staple | None) -> bytes:
        state = conn.get_app_data()
        if staple is not None and staple.valid(self.clock()):
            state.staple = SERVED
            return staple.der
        state.staple = NOT_SERVED
        return b""

    def refuses_without_sni(self) -> bool:
        """Strict must-staple for the default certificate applies to clients without SNI too."""
        return self.default is not None and self._refused(self.default)


# --- Fast paths over pyOpenSSL's memory BIOs -------------------------------------------------
# pyOpenSSL signals "no data yet" by raising WantReadError, several times per handshake; at
# thousands of handshakes a second those exceptions cost more than the Python around them.
# These helpers call the same OpenSSL functions through pyOpenSSL's own cffi bindings and only
# fall back to pyOpenSSL (and its exceptions) for real errors. Checked at import: if a future
# pyOpenSSL moves its internals, the public (slower) API is used instead.

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib

    _FAST = all(
        hasattr(_lib, n)
        for n in (
            "SSL_do_handshake",
            "SSL_get_error",
            "SSL_read",
            "SSL_write",
            "BIO_read",
            "BIO_write",
        )
    )
    _REUSED = hasattr(_lib, "SSL_session_reused")
except ImportError:  # pragma: no cover - depends on pyOpenSSL internals
    _FAST = _REUSED = False

_WANT_READ, _ZERO_RETURN = 2, 6
_BUFSIZE = 256 * 1024
_buffer = _ffi.new("char[]", _BUFSIZE) if _FAST else None
VERSIONS = {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


def resumed(conn: SSL.Connection) -> bool:
    """The handshake resumed a session (no certificate was sent, so no staple either)."""
    return _REUSED and bool(_lib.SSL_session_reused(conn._ssl))


def feed(conn: SSL.Connection, data: bytes) -> None:
    """Hand bytes received from the peer to OpenSSL (a memory BIO takes them all)."""
    if not _FAST:
        conn.bio_write(data)
        return
    if _lib.BIO_write(conn._into_ssl, _ffi.from_buffer(data), len(data)) != len(data):
        conn.bio_write(data)  # pragma: no cover - a memory BIO only refuses on allocation failure


def handshake(conn: SSL.Connection) -> bool:
    """Advance the handshake; True when done, False when it needs more input. SSL.Error on
    failure."""
    if not _FAST:
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            return False
        return True
    ssl = conn._ssl
    result = _lib.SSL_do_handshake(ssl)
    if result == 1:
        return True
    if _lib.SSL_get_error(ssl, result) == _WANT_READ:
        return False
    conn._raise_ssl_error(ssl, result)
    raise SSL.Error("handshake failed")


def pending_output(conn: SSL.Connection) -> bytes:
    """Everything OpenSSL has written for the peer (b"" when nothing)."""
    if not _FAST:
        chunks = []
        while True:
            try:
                chunks.append(conn.bio_read(_BUFSIZE))
            except SSL.WantReadError:
                return b"".join(chunks)
    chunks = []
    bio = conn._from_ssl
    while (n := _lib.BIO_read(bio, _buffer, _BUFSIZE)) > 0:
        chunks.append(_ffi.buffer(_buffer, n)[:])
        if n < _BUFSIZE:
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_plaintext(conn: SSL.Connection) -> tuple[bytes, bool]:
    """(decrypted bytes available now, whether the peer closed the TLS session)."""
    chunks: list[bytes] = []
    if not _FAST:
        try:
            while True:
                chunks.append(conn.recv(_BUFSIZE))
        except SSL.WantReadError:
            return b"".join(chunks), False
        except SSL.ZeroReturnError:
            return b"".join(chunks), True
    ssl = conn._ssl
    while True:
        n = _lib.SSL_read(ssl, _buffer, _BUFSIZE)
        if n > 0:
            chunks.append(_ffi.buffer(_buffer, n)[:])
            continue
        error = _lib.SSL_get_error(ssl, n)
        if error == _WANT_READ:
            return b"".join(chunks), False
        if error == _ZERO_RETURN:
            return b"".join(chunks), True
        conn._raise_ssl_error(ssl, n)
        raise SSL.Error("read failed")


def write_plaintext(conn: SSL.Connection, data: bytes) -> None:
    """Encrypt all of ``data`` into the outgoing memory BIO (read it with pending_output)."""
    if not _FAST:
        conn.sendall(data)
        return
    ssl = conn._ssl
    view = _ffi.from_buffer(data)
    total, offset = len(data), 0
    while offset < total:
        n = _lib.SSL_write(ssl, view + offset, total - offset)
        if n <= 0:
            conn._raise_ssl_error(ssl, n)
            raise SSL.Error("write failed")
        offset += n
