"""HTTP/1.1 heads: the fast paths agree byte for byte with the general parser wherever they
answer, and the general parser stays strict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsp_stapler.ingress import http1

NAMES = [
    b"Host", b"host", b"HOST", b"User-Agent", b"Accept", b"X-Trace", b"Connection",
    b"connection", b"Content-Length", b"content-length", b"Transfer-Encoding", b"Keep-Alive",
    b"Expect", b"X-Forwarded-For", b"Forwarded", b"Upgrade", b"TE", b"Trailer", b"Server",
    b"Date", b"Proxy-Connection", b"X-Forwarded-Host",
]  # fmt: skip
VALUES = [
    b"shop.example.test", b"curl/8", b"*/*", b"keep-alive", b"close", b"Keep-Alive",
    b"upgrade, x-trace", b"0", b"12", b"3, 3", b"chunked", b"gzip, chunked", b"100-continue",
    b"timeout=5", b"", b"a\tb", b"12a",
]  # fmt: skip
SPACES = st.sampled_from([b"", b" ", b"  ", b"\t"])
FIELD = st.tuples(st.sampled_from(NAMES), SPACES, st.sampled_from(VALUES), SPACES).map(
    lambda f: f[0] + b":" + f[1] + f[2] + f[3] + b"\r\n"
)
FIELDS = st.lists(FIELD, max_size=6).map(b"".join)
PLAIN = st.tuples(
    st.sampled_from([b"Server", b"Date", b"X-Trace", b"Vary"]), st.sampled_from(VALUES)
)
RESPONSE_FIELDS = st.tuples(
    st.lists(st.one_of(PLAIN.map(lambda f: f[0] + b": " + f[1] + b"\r\n"), FIELD), max_size=5),
    st.sampled_from([b"", b"Content-Length: 12\r\n", b"content-length:0 \r\n"]),
    st.sampled_from([b"", b"Connection: keep-alive\r\n", b"connection: close\r\n"]),
).map(lambda f: b"".join(f[0]) + f[1] + f[2])


@given(
    method=st.sampled_from([b"GET", b"HEAD", b"POST", b"PURGE"]),
    target=st.sampled_from([b"/", b"/a?b=c", b"*", b"http://x/"]),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    fields=FIELDS,
)
def test_fast_request_agrees_with_the_general_parser(
    method: bytes, target: bytes, version: bytes, fields: bytes
) -> None:
    raw = method + b" " + target + b" " + version + b"\r\n" + fields + b"\r\n"
    fast = http1.fast_request(raw, client_ip=b"10.0.0.1", proto=b"https", max_headers=100)
    if fast is None:
        return
    head = http1.parse_request_head(raw)  # must not raise: the fast path accepted it
    framing = http1.request_framing(head)
    assert framing == http1.NO_BODY
    assert http1.keep_alive(head, head.start[2])
    general = http1.forward_head(head, client_ip=b"10.0.0.1", proto=b"https", framing=framing)
    assert fast == (head.start[0], head.start[1], head.get(b"host"), general)


@settings(max_examples=300)
@given(
    status=st.sampled_from([b"200", b"204", b"304", b"101", b"103", b"404", b"2000"]),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    method=st.sampled_from([b"GET", b"HEAD"]),
    keep=st.booleans(),
    fields=RESPONSE_FIELDS,
)
def test_fast_response_agrees_with_the_general_parser(
    status: bytes, version: bytes, method: bytes, keep: bool, fields: bytes
) -> None:
    raw = version + b" " + status + b" Fine\r\n" + fields + b"\r\n"
    fast = http1.fast_response(raw, request_method=method, keep=keep)
    if fast is None:
        return
    head = http1.parse_response_head(raw)
    framing = http1.response_framing(head, request_method=method)
    assert framing.kind in ("length", "none")
    backend_keep = http1.keep_alive(head, head.start[0])
    general = http1.response_head(head, framing, keep=keep)
    assert fast == (int(status), general, framing.length, backend_keep)


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\n",
        b"Content-Length: 3\r\nConnection: keep-alive\r\n",
        b"content-length:0\r\nconnection: Close\r\n",
        b"Server: x\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 9\r\n",
        b"Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nContent-Length: 1\r\n",
    ],
)
@pytest.mark.parametrize("keep", [True, False])
def test_length_framed_responses_take_the_fast_path_and_agree(fields: bytes, keep: bool) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n"
    fast = http1.fast_response(raw, request_method=b"GET", keep=keep)
    assert fast is not None
    head = http1.parse_response_head(raw)
    framing = http1.response_framing(head, request_method=b"GET")
    general = http1.response_head(head, framing, keep=keep)
    assert fast == (200, general, framing.length, http1.keep_alive(head, b"HTTP/1.1"))


def test_the_common_shapes_take_the_fast_paths() -> None:
    request = b"GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n"
    got = http1.fast_request(request, client_ip=b"10.0.0.1", proto=b"https", max_headers=100)
    assert got is not None
    assert got[3] == (
        b"GET /x HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: a.test\r\n\r\n"
    )
    response = (
        b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\n\r\n"
    )
    assert http1.fast_response(response, request_method=b"GET", keep=False) == (
        200,
        b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        3,
        True,
    )


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET http://user@a.test/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET ftp://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"Host: a\r\n\r\n", 431),
    ],
)
def test_malformed_requests_are_refused_by_both_paths(raw: bytes, status: int) -> None:
    assert http1.fast_request(raw, client_ip=b"", proto=b"https", max_headers=100) is None
    with pytest.raises(http1.BadMessage) as refused:
        http1.parse_request_head(raw)
    assert refused.value.status == status


@pytest.mark.parametrize(
    ("target", "origin"),
    [(b"http://a.test/x?y=1", b"/x?y=1"), (b"HTTPS://a.test", b"/"), (b"http://a.test?q", b"/?q")],
)
def test_absolute_form_targets_route_by_their_own_host(target: bytes, origin: bytes) -> None:
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: other.test\r\nAccept: */*\r\n\r\n"
    head = http1.parse_request_head(raw)
    assert head.start[1] == origin
    assert head.get_all(b"host") == [b"a.test"]  # the target's authority, not the Host field
    out = http1.forward_head(head, client_ip=b"10.0.0.1", proto=b"https", framing=http1.NO_BODY)
    assert out.startswith(b"GET " + origin + b" HTTP/1.1\r\n")
    assert b"Host: a.test\r\n" in out
    assert b"other.test" not in out


def test_status_codes_have_three_digits_and_head_answers_keep_their_length() -> None:
    with pytest.raises(http1.BadMessage) as refused:
        http1.parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n")
    assert refused.value.status == 502
    head = http1.parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    framing = http1.response_framing(head, request_method=b"HEAD")
    assert framing == http1.NO_BODY
    to_head = http1.response_head(head, framing, keep=True, to_head_request=True)
    assert b"Content-Length: 1234\r\n" in to_head
    assert b"Content-Length: 0\r\n" in http1.response_head(head, framing, keep=True)


def _request(fields: bytes, version: bytes = b"HTTP/1.1") -> http1.Head:
    return http1.parse_request_head(b"GET /chat " + version + b"\r\nHost: a\r\n" + fields + b"\r\n")


@pytest.mark.parametrize(
    ("fields", "version", "offer"),
    [
        (b"Connection: Upgrade\r\nUpgrade: websocket\r\n", b"HTTP/1.1", b"websocket"),
        (b"Connection: keep-alive, upgrade\r\nUpgrade: WebSocket\r\n", b"HTTP/1.1", b"WebSocket"),
        (b"Connection: upgrade\r\nUpgrade: a, b/2\r\nUpgrade: c\r\n", b"HTTP/1.1", b"a, b/2, c"),
        (b"Connection: upgrade\r\nUpgrade: h2c, websocket\r\n", b"HTTP/1.1", b"websocket"),
        (b"Connection: upgrade\r\nUpgrade: H2C\r\n", b"HTTP/1.1", None),  # plain HTTP/1.1
        (b"Connection: upgrade\r\nUpgrade: h2, HTTP/2.0, http/3, ws\r\n", b"HTTP/1.1", b"ws"),
        (b"Upgrade: websocket\r\n", b"HTTP/1.1", None),  # Connection does not name it
        (b"Connection: upgrade\r\n", b"HTTP/1.1", None),  # nothing offered
        (b"Connection: upgrade\r\nUpgrade: websocket\r\n", b"HTTP/1.0", None),  # RFC 9110 7.8
    ],
)
def test_an_upgrade_offer_is_what_connection_and_upgrade_say_without_h2c(
    fields: bytes, version: bytes, offer: bytes | None
) -> None:
    assert http1.upgrade_offer(_request(fields, version)) == offer


@pytest.mark.parametrize("value", [b"web socket", b"websocket/", b"a/b/c", b"ws, (x)"])
def test_a_malformed_upgrade_is_refused(value: bytes) -> None:
    head = _request(b"Connection: upgrade\r\nUpgrade: " + value + b"\r\n")
    with pytest.raises(http1.BadMessage) as refused:
        http1.upgrade_offer(head)
    assert refused.value.status == 400


def test_an_upgrade_request_is_forwarded_with_connection_and_upgrade_restated() -> None:
    head = _request(
        b"Connection: keep-alive, Upgrade, X-Hop\r\nUpgrade: h2c, websocket\r\nX-Hop: 1\r\n"
        b"Sec-WebSocket-Key: k\r\nKeep-Alive: timeout=5\r\n"
    )
    offer = http1.upgrade_offer(head)
    out = http1.forward_head(
        head, client_ip=b"10.0.0.1", proto=b"https", framing=http1.NO_BODY, upgrade=offer
    )
    assert out == (
        b"GET /chat HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n"
        b"Connection: upgrade\r\nUpgrade: websocket\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a\r\n\r\n"
    )
    plain = http1.forward_head(head, client_ip=b"10.0.0.1", proto=b"https", framing=http1.NO_BODY)
    assert b"Upgrade" not in plain  # without an offer both are hop-by-hop, as ever
    assert b"Connection" not in plain


def test_a_101_is_restated_for_the_client_and_must_name_an_offered_protocol() -> None:
    head = http1.parse_response_head(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade, X-Hop\r\nUpgrade: WebSocket\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Hop: 1\r\nContent-Length: 0\r\n"
        b"Keep-Alive: timeout=5\r\n\r\n"
    )
    assert http1.switched_head(head, offered=b"chat, websocket") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Connection: upgrade\r\nUpgrade: WebSocket\r\n\r\n"
    )
    for upgrade, offered in [(b"h2c", b"websocket"), (b"", b"websocket"), (b"websocket", b"")]:
        bad = http1.parse_response_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + upgrade + b"\r\n\r\n"
        )
        with pytest.raises(http1.BadMessage) as refused:
            http1.switched_head(bad, offered=offered)
        assert refused.value.status == 502
