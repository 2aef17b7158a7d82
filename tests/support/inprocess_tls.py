"""TLS handshakes between a pyOpenSSL client and a worker's ``CertificateStore`` in memory,
as a worker runs them (the ClientHello picks the Context), for what needs no socket: which
Context a connection gets, what the callbacks decide, what OpenSSL negotiates."""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable

from devcluster.pki import TestPKI
from OpenSSL import SSL
from OpenSSL._util import lib as _lib

from ocsp_stapler.ingress import ticket_keys, tls
from ocsp_stapler.ingress.tls import CertificateStore, ConnectionOwner
from support.clocks import utcnow

HOST, OTHER = "www.example.test", "shop.example.test"


def two_host_store(pki: TestPKI) -> CertificateStore:
    store = CertificateStore()
    assert store.set_ticket_key(ticket_keys.new_key(), 3600)
    now = utcnow().replace(microsecond=0)
    certs = {}
    for host in (HOST, OTHER):
        leaf = pki.leaf(host)
        staple = pki.response(leaf, this_update=now, next_update=now + datetime.timedelta(hours=1))
        certs[host] = {
            "version": "1", "chain": pki.chain_pem(leaf).decode(),
            "key": leaf.key_pem.decode(), "hosts": [host], "staple": staple.hex(),
            "staple_expires": time.time() + 3600,
        }  # fmt: skip
    assert store.apply(certs, HOST) == []
    return store


def split_records(flight: bytes) -> bytes:
    """The same ClientHello, its handshake message split over two records."""
    body = flight[5 : 5 + int.from_bytes(flight[3:5], "big")]
    half = len(body) // 2
    return (
        b"".join(
            flight[:3] + len(part).to_bytes(2, "big") + part for part in (body[:half], body[half:])
        )
        + flight[5 + len(body) :]
    )


CLIENT = SSL.Context(SSL.TLS_CLIENT_METHOD)  # a client's sessions resume on its own Context
# Key shares for P-384 only, which the server ranks below X25519: it answers the first
# ClientHello with a HelloRetryRequest, and the client sends a second one.
RETRYING_CLIENT = SSL.Context(SSL.TLS_CLIENT_METHOD)
assert _lib.SSL_CTX_set1_curves_list(RETRYING_CLIENT._context, b"P-384:X25519") == 1


def handshake(
    store: CertificateStore, host: str, session: SSL.Session | None, *, split: bool = False,
    client_ctx: SSL.Context = CLIENT, retry_as: str | None = None,
    before_retry: Callable[[], None] = lambda: None,
) -> tuple[SSL.Connection, SSL.Connection, ConnectionOwner, bool]:  # fmt: skip
    """A handshake between a pyOpenSSL client and the store, as a worker runs it: the
    client, the server, what the callbacks told the owner, and whether OpenSSL completed it.
    ``retry_as``: the name the client's second ClientHello (after a HelloRetryRequest)
    sends, after ``before_retry`` ran."""
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    client.set_tlsext_host_name(host.encode())
    client.request_ocsp()
    if session is not None:
        client.set_session(session)
    owner, server, done = ConnectionOwner(), None, False
    for _ in range(8):
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        flight = tls.pending_output(client)
        if server is None:
            flight = split_records(flight) if split else flight
            server = store.new_connection(owner, flight)
            assert server is not None
        elif retry_as is not None:
            before_retry()
        tls.feed(server, flight)
        try:
            done = tls.handshake(server)
        except SSL.Error:
            break
        answer = tls.pending_output(server)
        if answer:  # nothing after the client's Finished when no ticket is sent
            client.bio_write(answer)
        if retry_as is not None and owner.hellos == 1:
            client.set_tlsext_host_name(retry_as.encode())
        if done:
            break
    assert server is not None
    with contextlib.suppress(SSL.Error):
        client.do_handshake()
        client.recv(1)  # the TLS 1.3 ticket comes after the handshake
    return client, server, owner, done
