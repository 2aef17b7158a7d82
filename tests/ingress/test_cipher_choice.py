"""Which cipher a handshake gets: Mozilla's intermediate list, in the client's order (a phone
without AES hardware asks for ChaCha20 first and gets it), and nothing outside it."""

from __future__ import annotations

import pytest
from devcluster.pki import TestPKI
from OpenSSL import SSL

from support.inprocess_tls import HOST, handshake, two_host_store


def _client(version: int, ciphers: bytes) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(version)
    ctx.set_max_proto_version(version)
    if version == SSL.TLS1_3_VERSION:
        ctx.set_tls13_ciphersuites(ciphers)
    else:
        ctx.set_cipher_list(ciphers)
    return ctx


@pytest.mark.parametrize(
    ("version", "offered", "chosen"),
    [
        (SSL.TLS1_2_VERSION, b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
         "ECDHE-ECDSA-AES128-GCM-SHA256"),
        (SSL.TLS1_2_VERSION, b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
         "ECDHE-ECDSA-CHACHA20-POLY1305"),
        (SSL.TLS1_2_VERSION, b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
         "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (SSL.TLS1_3_VERSION, b"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
         "TLS_CHACHA20_POLY1305_SHA256"),
        (SSL.TLS1_3_VERSION, b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
         "TLS_AES_128_GCM_SHA256"),
    ],
)  # fmt: skip
def test_the_client_order_picks_among_the_intermediate_ciphers(
    pki: TestPKI, version: int, offered: bytes, chosen: str
) -> None:
    _, server, _, done = handshake(
        two_host_store(pki), HOST, None, client_ctx=_client(version, offered)
    )
    assert done
    assert server.get_cipher_name() == chosen


@pytest.mark.parametrize(
    "offered", [b"ECDHE-ECDSA-AES128-SHA", b"AES128-GCM-SHA256", b"ECDHE-ECDSA-AES128-SHA256"]
)
def test_a_client_with_only_weaker_ciphers_is_refused(pki: TestPKI, offered: bytes) -> None:
    """CBC, SHA-1 MACs and static-RSA key exchange: not in the list, no handshake."""
    _, _, _, done = handshake(
        two_host_store(pki), HOST, None, client_ctx=_client(SSL.TLS1_2_VERSION, offered)
    )
    assert not done
