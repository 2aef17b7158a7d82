"""Debian's real nginx fed by ``Delivery``: each new staple reaches it by a graceful reload with
no failed handshake, and "no valid staple" turns stapling off instead of leaving an expired
response served (nginx staples a file-loaded response past its nextUpdate: measured in
tests/operator/test_consumers.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.pki import Issued, TestPKI

from ocsp_stapler.consumers.delivery import Delivery
from ocsp_stapler.consumers.errors import ConsumerError
from support import nginx_servers
from support.status_requests import handshakes_across, served, utc

HOST = "nginx.example.test"


@pytest.fixture
def site(pki: TestPKI, tmp_path: Path) -> tuple[Path, int, Issued]:
    leaf = pki.leaf(HOST)
    return tmp_path, nginx_servers.included_site(tmp_path, pki, leaf, HOST), leaf


@pytest.fixture
def delivery(site: tuple[Path, int, Issued]) -> Delivery:
    directory = site[0]
    return Delivery(
        staple_file=directory / "staple.der",
        nginx_include=directory / "stapling.conf",
        nginx_pidfile=directory / "nginx.pid",
    )


def _start(directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(nginx_servers.command(directory),
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def _configuration_valid(directory: Path) -> bool:
    tested = subprocess.run(nginx_servers.command(directory, "-t"), capture_output=True,
                            check=False)  # fmt: skip
    return tested.returncode == 0


async def test_each_staple_reaches_nginx_by_reload_and_none_turns_stapling_off(
    site: tuple[Path, int, Issued], delivery: Delivery, pki: TestPKI
) -> None:
    directory, port, leaf = site
    await delivery.hand_over(None)  # before nginx starts: it must start without a staple
    assert _configuration_valid(directory)
    process = _start(directory)
    next(process)
    try:
        await served(port, HOST, None)  # the pid file exists from here on
        first_at, second_at = utc(minutes=-10), utc(minutes=-1)
        first = pki.response(leaf, this_update=first_at, next_update=utc(days=1))
        await delivery.hand_over(first)
        await served(port, HOST, first_at, steady=5)  # the first workers (no staple) are gone

        second = pki.response(leaf, this_update=second_at, next_update=utc(days=1))
        got = await handshakes_across(port, HOST, lambda: delivery.hand_over(second))
        assert got.failures == []
        assert None not in got.seen
        await served(port, HOST, second_at)

        await delivery.hand_over(None)
        await served(port, HOST, None)
        assert not delivery.staple_file.exists()
        assert _configuration_valid(directory)  # a later reload or restart still works
    finally:
        next(process, None)


async def test_a_broken_pid_file_is_reported_and_the_include_still_written(
    site: tuple[Path, int, Issued], delivery: Delivery, pki: TestPKI
) -> None:
    directory, _port, leaf = site
    assert delivery.nginx_pidfile is not None
    for content in (b"", b"not a pid\n", b"1\n", b"9" * 100):
        delivery.nginx_pidfile.write_bytes(content)
        staple = pki.response(leaf, this_update=utc(), next_update=utc(days=1))
        with pytest.raises(ConsumerError, match="nginx.pid"):
            await delivery.hand_over(staple)
        assert "ssl_stapling_file" in (directory / "stapling.conf").read_text()
        assert delivery.staple_file.read_bytes() == staple


async def test_nginx_not_running_yet_is_no_error(
    site: tuple[Path, int, Issued], delivery: Delivery, pki: TestPKI
) -> None:
    """A sidecar may start before nginx: without a pid file, or with one naming a process
    that is gone, the include is written and nginx reads it when it starts."""
    directory, port, leaf = site
    assert delivery.nginx_pidfile is not None
    staple_at = utc(minutes=-3)
    await delivery.hand_over(None)
    delivery.nginx_pidfile.write_text(f"{_gone_pid()}\n")
    await delivery.hand_over(pki.response(leaf, this_update=staple_at, next_update=utc(days=1)))
    delivery.nginx_pidfile.unlink()
    process = _start(directory)
    next(process)
    try:
        await served(port, HOST, staple_at)
    finally:
        next(process, None)


async def test_a_pid_file_naming_another_program_sends_it_no_signal(
    delivery: Delivery, pki: TestPKI, site: tuple[Path, int, Issued]
) -> None:
    """A stale pid file whose number another program took: that program is not hung up on."""
    assert delivery.nginx_pidfile is not None
    other = subprocess.Popen(["sleep", "30"])
    try:
        delivery.nginx_pidfile.write_text(f"{other.pid}\n")
        await delivery.hand_over(pki.response(site[2], this_update=utc(), next_update=utc(days=1)))
        assert other.poll() is None  # SIGHUP would have ended sleep
    finally:
        other.kill()
        other.wait()


def _gone_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
