"""Debian's real HAProxy fed through its runtime API (``consumers.haproxy``): a refreshed
staple reaches it without a reload or a failed handshake, and what HAProxy itself does with
bad staples is measured, because the sidecar and the host mode rely on it."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from devcluster.pki import Issued, TestPKI
from devcluster.responder import free_port

from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.consumers.files import write_atomically
from ocsp_stapler.consumers.haproxy import set_ocsp_response
from support.kube import wait_for
from support.status_requests import stapled_this_update

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
HOST = "haproxy.example.test"

CONFIG = """
global
    stats socket {dir}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend tls
    bind 127.0.0.1:{port} ssl crt {dir}/site.pem
    http-request return status 200 content-type text/plain string "served by haproxy"
"""


@dataclass
class Haproxy:
    dir: Path
    port: int
    leaf: Issued

    @property
    def socket(self) -> Path:
        return self.dir / "admin.sock"

    async def this_update(self) -> str | None:
        return await stapled_this_update(self.port, HOST)


def _utc(**delta: float) -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(**delta)


def _openssl_time(when: datetime.datetime) -> str:
    """How ``openssl s_client`` prints a time (``Dec  3 18:28:56 2026 GMT``)."""
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


@pytest.fixture
def haproxy(pki: TestPKI) -> Iterator[Haproxy]:
    """HAProxy started with an expired ``.ocsp`` file next to its certificate."""
    leaf = pki.leaf(HOST)
    # A short directory: a unix socket path has ~100 bytes at most.
    directory = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))
    (directory / "site.pem").write_bytes(pki.chain_pem(leaf) + leaf.key_pem)
    expired = pki.response(leaf, this_update=_utc(days=-2), next_update=_utc(days=-1))
    write_atomically(directory / "site.pem.ocsp", expired)
    port = free_port()
    (directory / "haproxy.cfg").write_text(CONFIG.format(dir=directory, port=port))
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(directory / "haproxy.cfg")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield Haproxy(dir=directory, port=port, leaf=leaf)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


async def _answering(haproxy: Haproxy) -> None:
    async def up() -> bool | None:
        try:
            await haproxy.this_update()
        except ConnectionError:
            return None
        return haproxy.socket.exists() or None

    await wait_for(up, what="HAProxy to answer")


async def test_a_pushed_staple_is_served_without_a_reload_or_a_failed_handshake(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    await _answering(haproxy)
    assert await haproxy.this_update() is None  # an expired file at start: ignored, not served
    first_at, second_at = _utc(minutes=-10), _utc(minutes=-1)
    first = pki.response(haproxy.leaf, this_update=first_at, next_update=_utc(days=1))
    second = pki.response(haproxy.leaf, this_update=second_at, next_update=_utc(days=1))
    await set_ocsp_response(haproxy.socket, first)
    assert await haproxy.this_update() == _openssl_time(first_at)

    seen: list[str | None] = []
    failures: list[str] = []

    async def handshakes() -> None:
        for _ in range(30):  # bounded: about a second of handshakes across the switch
            try:
                seen.append(await haproxy.this_update())
            except ConnectionError as exc:
                failures.append(str(exc))

    async def switch() -> None:
        await asyncio.sleep(0.2)
        await set_ocsp_response(haproxy.socket, second)

    await asyncio.gather(handshakes(), handshakes(), switch())
    assert failures == []
    assert None not in seen  # every handshake was stapled, before and after
    assert set(seen) <= {_openssl_time(first_at), _openssl_time(second_at)}
    assert await haproxy.this_update() == _openssl_time(second_at)


async def test_haproxy_refuses_expired_foreign_and_garbled_staples_and_keeps_the_last(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    await _answering(haproxy)
    good_at = _utc(minutes=-5)
    await set_ocsp_response(
        haproxy.socket, pki.response(haproxy.leaf, this_update=good_at, next_update=_utc(days=1))
    )
    expired = pki.response(haproxy.leaf, this_update=_utc(days=-2), next_update=_utc(days=-1))
    foreign = pki.response(pki.leaf("other.example.test"), this_update=_utc(),
                           next_update=_utc(days=1))  # fmt: skip
    for staple, said in ((expired, "no longer valid"), (foreign, "does not match"),
                         (b"\x30\x03garbled", "parse")):  # fmt: skip
        with pytest.raises(ConsumerError, match=said):
            await set_ocsp_response(haproxy.socket, staple)
        assert await haproxy.this_update() == _openssl_time(good_at)


async def test_haproxy_stops_stapling_five_minutes_before_next_update(
    haproxy: Haproxy, pki: TestPKI
) -> None:
    """Measured: HAProxy takes a response with 4 minutes left but no longer staples it (its
    clock-skew margin is 300 s), while one with 6 minutes left is stapled."""
    await _answering(haproxy)
    six_at = _utc(minutes=-2)
    six = pki.response(haproxy.leaf, this_update=six_at, next_update=_utc(minutes=6))
    await set_ocsp_response(haproxy.socket, six)
    assert await haproxy.this_update() == _openssl_time(six_at)
    four = pki.response(haproxy.leaf, this_update=_utc(minutes=-1), next_update=_utc(minutes=4))
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
