"""The server name read from a ClientHello before OpenSSL sees it (``client_hello``).

Real ClientHellos come from OpenSSL clients (TLS 1.2 and 1.3, with and without SNI, with a
session ticket offered); structured ones are built field by field, so that every length
field can be made to lie; neither kind ever makes the reader raise, and a name it returns
is always the one the client sent.
"""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL

from ocsp_stapler.ingress import client_hello, tls


def openssl_hello(name: bytes | None, version: int = SSL.TLS1_3_VERSION) -> bytes:
    """The first flight of a real OpenSSL client."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(version)
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    if name is not None:
        client.set_tlsext_host_name(name)
    with contextlib.suppress(SSL.WantReadError):
        client.do_handshake()
    return tls.pending_output(client)


def _vec(width: int, body: bytes) -> bytes:
    return len(body).to_bytes(width, "big") + body


def built_hello(extensions: list[tuple[int, bytes]], session_id: bytes = b"") -> bytes:
    """A ClientHello record built field by field."""
    body = (
        b"\x03\x03"
        + bytes(32)
        + _vec(1, session_id)
        + _vec(2, b"\x13\x01\xc0\x2b")
        + _vec(1, b"\x00")
        + _vec(2, b"".join(struct.pack("!HH", k, len(v)) + v for k, v in extensions))
    )
    handshake = b"\x01" + _vec(3, body)
    return b"\x16\x03\x01" + _vec(2, handshake)


def sni(name: bytes) -> tuple[int, bytes]:
    return 0, _vec(2, b"\x00" + _vec(2, name))


def test_the_name_of_real_client_hellos_is_read() -> None:
    for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
        hello = openssl_hello(b"www.example.test", version)
        assert client_hello.record_length(hello) == len(hello)
        assert client_hello.server_name(hello) == b"www.example.test"
        assert client_hello.server_name(openssl_hello(None, version)) == b""


def test_a_record_is_waited_for_until_its_header_is_there() -> None:
    hello = openssl_hello(b"www.example.test")
    assert [client_hello.record_length(hello[:n]) for n in range(5)] == [0] * 5
    assert client_hello.record_length(hello[:5]) == len(hello)
    assert client_hello.record_length(b"GET / HTTP/1.1\r\n") is None  # plain HTTP on 443
    assert client_hello.record_length(b"\x17\x03\x03\x00\x10") is None  # not a handshake


def test_every_truncation_of_a_real_hello_reads_no_name() -> None:
    hello = openssl_hello(b"www.example.test")
    for n in range(len(hello)):
        assert client_hello.server_name(hello[:n]) is None


def test_the_name_is_found_among_other_extensions() -> None:
    hello = built_hello([(10, b"\x00\x02\x00\x1d"), sni(b"a.test"), (43, b"\x02\x03\x04")])
    assert client_hello.server_name(hello) == b"a.test"


def test_lying_lengths_read_no_name() -> None:
    good = built_hello([sni(b"a.test")])
    assert client_hello.server_name(good) == b"a.test"
    name_list = good.index(b"\x00\x09\x00\x00\x06a.test")
    lies = {
        "handshake length": (6, b"\x00\x00\x10"),
        "session id length": (43, b"\x20"),
        "extensions length": (name_list - 6, b"\x00\x10"),
        "extension length": (name_list - 2, b"\x00\x0a"),
        "name list length": (name_list, b"\x00\x08"),
        "name type": (name_list + 2, b"\x01"),
        "name length": (name_list + 3, b"\x00\x07"),
    }
    for what, (at, value) in lies.items():
        bad = good[:at] + value + good[at + len(value) :]
        assert bad != good, what
        assert client_hello.server_name(bad) is None, what
    assert client_hello.server_name(good + b"\x00") is None  # trailing bytes
    assert client_hello.server_name(built_hello([sni(b"")])) is None  # an empty name


@given(
    st.lists(
        st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=40)),
        max_size=6,
    ),
    st.binary(min_size=1, max_size=60),
    st.integers(0, 6),
    st.binary(max_size=32),
)
def test_structured_hellos_yield_their_name(
    others: list[tuple[int, bytes]], name: bytes, at: int, session_id: bytes
) -> None:
    extensions = list(others)
    extensions.insert(min(at, len(extensions)), sni(name))
    assert client_hello.server_name(built_hello(extensions, session_id)) == name


@given(st.binary(max_size=300), st.integers(0, 400), st.binary(max_size=4))
def test_mutated_hellos_never_raise(noise: bytes, at: int, patch: bytes) -> None:
    hello = built_hello([(10, noise[:20]), sni(noise[20:80] or b"x"), (16, noise[80:])])
    bad = hello[:at] + patch + hello[at + len(patch) :]
    got = client_hello.server_name(bad)
    assert got is None or got in bad
    assert client_hello.server_name(noise) in (None, b"") or noise.startswith(b"\x16")
