"""Debian's real HAProxy fed through its runtime API (``consumers.haproxy``): a refreshed
staple reaches it without a reload or a failed handshake, and what HAProxy itself does with
bad staples is measured, because the sidecar and the host mode rely on it."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.pki import TestPKI

from ocsp_stapler.consumers.errors import ConsumerError, NotRunning
from ocsp_stapler.consumers.haproxy import open_ocsp_slot, set_ocsp_response, withdraw_staple
from support.haproxy_servers import Haproxy, running
from support.status_requests import handshakes_across, printed, utc
from support.unix_servers import stats_socket

HOST = "haproxy.example.test"


@pytest.fixture
def haproxy(pki: TestPKI) -> Iterator[Haproxy]:
    """HAProxy started with an expired ``.ocsp`` file next to its certificate."""
    leaf = pki.leaf(HOST)
    expired = pki.response(leaf, this_update=utc(days=-2), next_update=utc(days=-1))
    with running(pki, leaf, HOST, ocsp_file=expired) as server:
        yield server


async def test_a_pushed_staple_is_served_without_a_reload_or_a_failed_handshake(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    await haproxy.answering()
    assert await haproxy.this_update() is None  # an expired file at start: ignored, not served
    first_at, second_at = utc(minutes=-10), utc(minutes=-1)
    first = pki.response(haproxy.leaf, this_update=first_at, next_update=utc(days=1))
    second = pki.response(haproxy.leaf, this_update=second_at, next_update=utc(days=1))
    await set_ocsp_response(haproxy.socket, first)
    assert await haproxy.this_update() == printed(first_at)

    got = await handshakes_across(
        haproxy.port, HOST, lambda: set_ocsp_response(haproxy.socket, second)
    )
    assert got.failures == []
    assert None not in got.seen  # every handshake was stapled, before and after
    assert set(got.seen) <= {printed(first_at), printed(second_at)}
    assert await haproxy.this_update() == printed(second_at)


async def test_haproxy_refuses_expired_foreign_and_garbled_staples_and_keeps_the_last(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    await haproxy.answering()
    good_at = utc(minutes=-5)
    await set_ocsp_response(
        haproxy.socket, pki.response(haproxy.leaf, this_update=good_at, next_update=utc(days=1))
    )
    expired = pki.response(haproxy.leaf, this_update=utc(days=-2), next_update=utc(days=-1))
    foreign = pki.response(pki.leaf("other.example.test"), this_update=utc(),
                           next_update=utc(days=1))  # fmt: skip
    for staple, said in ((expired, "no longer valid"), (foreign, "does not match"),
                         (b"\x30\x03garbled", "parse")):  # fmt: skip
        with pytest.raises(ConsumerError, match=said):
            await set_ocsp_response(haproxy.socket, staple)
        assert await haproxy.this_update() == printed(good_at)


async def test_haproxy_stops_stapling_five_minutes_before_next_update(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    """Measured: HAProxy takes a response with 4 minutes left but no longer staples it (its
    clock-skew margin is 300 s), while one with 6 minutes left is stapled."""
    await haproxy.answering()
    six_at = utc(minutes=-2)
    six = pki.response(haproxy.leaf, this_update=six_at, next_update=utc(minutes=6))
    await set_ocsp_response(haproxy.socket, six)
    assert await haproxy.this_update() == printed(six_at)
    four = pki.response(haproxy.leaf, this_update=utc(minutes=-1), next_update=utc(minutes=4))
    await set_ocsp_response(haproxy.socket, four)
    assert await haproxy.this_update() is None


async def test_without_an_ocsp_file_at_start_a_slot_is_opened_and_the_push_served(
    pki: TestPKI,
) -> None:
    """Measured: HAProxy started with no .ocsp file refuses every push for that certificate;
    an empty .ocsp certificate transaction opens the slot, and repeating it while a staple is
    held keeps the staple (no failed handshake either way)."""
    leaf = pki.leaf(HOST)
    with running(pki, leaf, HOST) as haproxy:
        await haproxy.answering()
        at = utc(minutes=-3)
        staple = pki.response(leaf, this_update=at, next_update=utc(days=1))
        with pytest.raises(ConsumerError, match="does not match"):
            await set_ocsp_response(haproxy.socket, staple)
        crt = haproxy.dir / "site.pem"
        await set_ocsp_response(haproxy.socket, staple, certificate=crt)
        assert await haproxy.this_update() == printed(at)
        got = await handshakes_across(
            haproxy.port, HOST, lambda: open_ocsp_slot(haproxy.socket, crt), rounds=10
        )
        assert got.failures == []
        assert set(got.seen) == {printed(at)}
        with pytest.raises(ConsumerError, match="opened no OCSP slot"):
            await open_ocsp_slot(haproxy.socket, haproxy.dir / "not-served.pem")
        with pytest.raises(ConsumerError, match="cannot be named"):
            await open_ocsp_slot(haproxy.socket, Path("/tmp/a b.pem"))


async def test_a_withdrawn_staple_is_no_longer_served_and_the_next_push_is(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    """A still-valid staple dropped by a certificate transaction (HAProxy itself would serve
    it until 5 minutes before its nextUpdate), with no failed handshake; the next push works."""
    await haproxy.answering()
    crt = haproxy.dir / "site.pem"
    good_at = utc(minutes=-5)
    await set_ocsp_response(haproxy.socket,
                            pki.response(haproxy.leaf, this_update=good_at, next_update=utc(days=1)))  # fmt: skip
    assert await haproxy.this_update() == printed(good_at)
    got = await handshakes_across(
        haproxy.port, HOST, lambda: withdraw_staple(haproxy.socket, crt), rounds=10
    )
    assert got.failures == []
    assert await haproxy.this_update() is None
    again_at = utc(minutes=-1)
    again = pki.response(haproxy.leaf, this_update=again_at, next_update=utc(days=1))
    with pytest.raises(ConsumerError, match="does not match"):
        await set_ocsp_response(haproxy.socket, again)  # no slot any more ...
    await set_ocsp_response(haproxy.socket, again, certificate=crt)  # ... until it is opened
    assert await haproxy.this_update() == printed(again_at)
    cert_only = haproxy.dir / "cert-only.pem"
    cert_only.write_bytes(pki.chain_pem(haproxy.leaf))
    with pytest.raises(ConsumerError, match="with its key"):
        await withdraw_staple(haproxy.socket, cert_only)


async def test_an_absent_haproxy_is_not_running_and_a_silent_one_an_error(tmp_path: Path) -> None:
    """No socket, or a stale one (HAProxy exited): not running, it reads the file at start."""
    with pytest.raises(NotRunning, match="not running"):
        await set_ocsp_response(tmp_path / "nothing.sock", b"\x30\x00")
    async with stats_socket(None) as silent:
        with pytest.raises(ConsumerError, match="did not answer") as raised:
            await set_ocsp_response(silent, b"\x30\x00", within=0.3)
        assert not isinstance(raised.value, NotRunning)
    stale = Path(tempfile.mkdtemp(prefix="stale-", dir="/tmp")) / "s.sock"
    try:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(stale))
        listener.close()  # the file stays, nobody listens
        with pytest.raises(NotRunning):
            await set_ocsp_response(stale, b"\x30\x00")
    finally:
        shutil.rmtree(stale.parent, ignore_errors=True)


async def test_a_staple_too_large_for_one_command_is_refused_unsent(tmp_path: Path) -> None:
    with pytest.raises(ConsumerError, match="too large"):
        await set_ocsp_response(tmp_path / "never-opened.sock", b"\x00" * 12 * 1024)
