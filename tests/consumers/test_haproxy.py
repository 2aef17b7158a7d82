"""Debian's real HAProxy fed through its runtime API (``consumers.haproxy``): a refreshed
staple reaches it without a reload or a failed handshake, and what HAProxy itself does with
bad staples is measured, because the sidecar and the host mode rely on it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.pki import TestPKI

from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.consumers.haproxy import set_ocsp_response
from support.haproxy_servers import Haproxy, running
from support.status_requests import handshakes_across, printed, utc

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


async def test_an_absent_or_silent_haproxy_is_a_consumer_error(tmp_path: Path) -> None:
    with pytest.raises(ConsumerError, match="cannot reach HAProxy"):
        await set_ocsp_response(tmp_path / "nothing.sock", b"\x30\x00")

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # reads the command, never answers
        await done.wait()
        writer.close()

    path = Path(tempfile.mkdtemp(prefix="sil-", dir="/tmp")) / "s.sock"
    server = await asyncio.start_unix_server(silent, path=str(path))
    try:
        with pytest.raises(ConsumerError, match="did not answer"):
            await set_ocsp_response(path, b"\x30\x00", within=0.3)
    finally:
        done.set()
        server.close()
        shutil.rmtree(path.parent, ignore_errors=True)


async def test_a_staple_too_large_for_one_command_is_refused_unsent(tmp_path: Path) -> None:
    with pytest.raises(ConsumerError, match="too large"):
        await set_ocsp_response(tmp_path / "never-opened.sock", b"\x00" * 12 * 1024)
