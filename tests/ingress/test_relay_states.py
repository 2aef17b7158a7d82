"""The relay's state machine, driven event by event: orders of events that real peers produce
only by timing (a client's send buffer filling exactly as a response ends) made deterministic.

Transports here are recorders, not mocks of a peer: the ProxySession and the BackendConnection
are the real ones, fed the bytes and flow-control callbacks a transport would deliver.
"""

from __future__ import annotations

from ocsp_stapler.ingress.metrics import WorkerMetrics
from ocsp_stapler.ingress.proxying import ProxySettings, Relay
from ocsp_stapler.ingress.routes import Endpoint, HostRules, PathRule, RouteTable, ServiceBackend
from ocsp_stapler.ingress.upstreams import BackendConnection
from ocsp_stapler.ingress.worker import ClientConnection, Worker, WorkerSettings
from support.recorders import Recorder

GET = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"


def relay_with_one_backend(*, draining: bool = False) -> tuple[Relay, BackendConnection, Recorder]:
    rules = HostRules()
    rules.add(PathRule(path="/", exact=False, backend_key="b"))
    endpoint = Endpoint("127.0.0.1", 8080)
    table = RouteTable(exact={"a.test": rules}, backends={"b": ServiceBackend("b", (endpoint,))})
    relay = Relay(
        routes=lambda: table,
        settings=ProxySettings(),
        metrics=WorkerMetrics(),
        draining=lambda: draining,
        clock=lambda: 0.0,
    )
    backend_side = Recorder()
    upstream = BackendConnection(endpoint, relay.pool)
    upstream.connection_made(backend_side)  # type: ignore[arg-type]
    relay.pool.put(upstream)
    return relay, upstream, backend_side


def test_a_backend_connection_returns_to_the_pool_reading_after_a_slow_client() -> None:
    relay, upstream, backend_side = relay_with_one_backend()
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")

    session.feed(GET)
    assert backend_side.take().startswith(b"GET / HTTP/1.1\r\n")
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    session.client_paused(True)  # the client's send buffer filled: stop reading the backend
    assert not backend_side.reading
    upstream.data_received(b"67890")  # the rest was already on its way: the response ends
    assert client.take().endswith(b"1234567890")
    assert relay.pool.idle[upstream.endpoint] == [upstream]
    assert backend_side.reading  # pooled connections always read again
    session.client_paused(False)

    session.feed(GET)  # the next request takes the same backend connection
    assert upstream.owner is session
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert client.take().endswith(b"\r\n\r\nok")


def test_pipelined_requests_wait_their_turn_and_reads_pause_past_the_head_limit() -> None:
    relay, upstream, backend_side = relay_with_one_backend()
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")

    session.feed(GET + GET)  # two at once: the second waits for the first's answer
    assert backend_side.take().count(b"GET / ") == 1
    session.feed(b"X" * (ProxySettings().max_header_bytes + 1))  # more early bytes than a head
    assert not client.reading
    upstream.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert client.reading  # the first exchange is over: reading again
    assert backend_side.take().count(b"GET / ") == 1  # and the second request went out


def test_a_dropped_pooled_connection_is_not_retried_for_a_post() -> None:
    relay, upstream, _ = relay_with_one_backend()
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")
    session.feed(b"POST /order HTTP/1.1\r\nHost: a.test\r\n\r\n")
    upstream.connection_lost(None)  # the backend may have acted on it: no second try
    assert client.take().startswith(b"HTTP/1.1 502 ")
    assert client.closed


def test_an_http10_client_gets_a_chunked_answer_plain_and_closed() -> None:
    relay, upstream, _ = relay_with_one_backend()
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")
    session.feed(b"GET / HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n")
    upstream.data_received(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    answer = client.take()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"hello"
    assert client.closed


def test_while_draining_a_response_says_connection_close() -> None:
    relay, upstream, _ = relay_with_one_backend(draining=True)
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")
    session.feed(GET)
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert b"Connection: close\r\n" in client.take()
    assert client.closed


async def test_a_closing_connection_that_cannot_flush_is_cut_after_the_body_timeout() -> None:
    worker = Worker(WorkerSettings(proxy=ProxySettings(body_timeout=5.0)))
    conn = ClientConnection(worker, tls=False)
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.close()  # the client reads nothing: the transport's buffer never drains
    assert transport.closed
    assert not transport.aborted
    conn.expire(worker.loop_time() + 1)
    assert not transport.aborted
    conn.expire(worker.loop_time() + 6)
    assert transport.aborted


def test_a_head_answer_keeps_the_length_the_backend_announced() -> None:
    relay, upstream, _ = relay_with_one_backend()
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")
    session.feed(b"HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert b"Content-Length: 1234\r\n" in client.take()
    assert not client.closed  # no body to wait for: the connection stays open


def test_a_backend_still_full_when_taken_from_the_pool_holds_the_client_back() -> None:
    relay, upstream, _ = relay_with_one_backend()
    upstream.pause_writing()  # its send buffer filled during an earlier exchange
    client = Recorder()
    session = relay.session(client, client_ip=b"10.0.0.1", proto=b"https")
    session.feed(b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nab")
    assert not client.reading  # no more body until the backend takes some
    upstream.resume_writing()
    assert client.reading
