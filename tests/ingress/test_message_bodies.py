"""Incremental body framing: any split of the input gives the same output, strictly parsed."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocsp_stapler.ingress.http1 import BadMessage, Framing
from ocsp_stapler.ingress.message_bodies import ChunkedBody, LengthBody, UntilCloseBody, decoder


def feed_in_pieces(body: ChunkedBody | LengthBody, data: bytes, cuts: list[int]) -> bytes:
    """Feed ``data`` cut at ``cuts``; return the output and check what was left over."""
    out, consumed = [], 0
    edges = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(edges):
        piece = data[start:end]
        if body.done:
            break
        got, used = body.feed(piece)
        out.append(got)
        consumed = start + used
    return b"".join(out) + b"|" + data[consumed:]


def chunked(chunks: list[bytes], trailers: bytes = b"") -> bytes:
    return b"".join(b"%X\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n" + trailers + b"\r\n"


@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    rest=st.binary(max_size=20),
)
def test_chunked_is_reencoded_whatever_the_split(
    chunks: list[bytes], cuts: list[int], rest: bytes
) -> None:
    wire = chunked(chunks, trailers=b"X-Sum: 1\r\n")
    body = ChunkedBody()
    got = feed_in_pieces(body, wire + rest, cuts)
    expected = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    assert body.done
    assert got == expected + b"|" + rest  # trailers dropped, the next message left alone
    plain = ChunkedBody(reencode=False)  # for a client that cannot read chunks
    assert feed_in_pieces(plain, wire + rest, cuts) == b"".join(chunks) + b"|" + rest


@given(
    length=st.integers(min_value=0, max_value=300),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_length_stops_at_its_end(length: int, cuts: list[int]) -> None:
    body = LengthBody(length)
    data = bytes(range(256)) * 2
    assert feed_in_pieces(body, data[:length] + b"NEXT", cuts) == data[:length] + b"|NEXT"
    assert body.done


@pytest.mark.parametrize(
    "wire",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
        b"-5\r\nhello\r\n0\r\n\r\n",  # signed
        b"1" + b"0" * 16 + b"\r\n",  # absurdly large
        b"5;" + b"e" * 5000 + b"\r\n",  # endless extension
        b"0\r\n" + b"X: y\r\n" * 4000,  # endless trailers
    ],
)
def test_malformed_chunked_is_refused(wire: bytes) -> None:
    with pytest.raises(BadMessage):
        ChunkedBody().feed(wire)


def test_until_close_ends_with_the_connection_and_chunked_does_not() -> None:
    body = UntilCloseBody()
    assert body.feed(b"abc") == (b"abc", 3)
    assert not body.done
    assert body.end()
    assert body.done
    assert not ChunkedBody().end()
    assert decoder(Framing("none")).done
    assert decoder(Framing("length", 0)).done
