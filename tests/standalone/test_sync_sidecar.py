"""``ocsp-stapler sync`` as a real process next to Debian's real HAProxy and nginx, fed by a
Secret volume updated exactly as the kubelet does it (a new directory, one ``..data`` swap):
each refreshed staple is served with no failed handshake; foreign, older and unwanted staples
are never handed over; an expired one stops being served."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from devcluster.pki import Issued, TestPKI

from support import nginx_servers
from support.haproxy_servers import Haproxy, running
from support.secret_volumes import publish
from support.sidecars import CLI, sync_sidecar
from support.status_requests import handshakes_across, printed, served, utc
from support.unix_servers import stats_socket

HOST = "sidecar.example.test"


@pytest.fixture
def leaf(pki: TestPKI) -> Issued:
    return pki.leaf(HOST)


@pytest.fixture
def haproxy(pki: TestPKI, leaf: Issued) -> Iterator[Haproxy]:
    """Started before the sidecar and with no .ocsp file: the harder order."""
    with running(pki, leaf, HOST) as server:
        yield server


def _volume(tmp_path: Path, pki: TestPKI, leaf: Issued, staple: bytes) -> Path:
    volume = tmp_path / "secret"
    publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.key": leaf.key_pem,
                     "tls.ocsp-staple": staple})  # fmt: skip
    return volume


async def test_haproxy_gets_each_refreshed_staple_from_the_volume_and_nothing_else(
    pki: TestPKI, leaf: Issued, haproxy: Haproxy, tmp_path: Path
) -> None:
    await haproxy.answering()
    first_at, second_at = utc(minutes=-10), utc(minutes=-2)
    first = pki.response(leaf, this_update=first_at, next_update=utc(days=1))
    volume = _volume(tmp_path, pki, leaf, first)
    with sync_sidecar("--secret-dir", str(volume), "--out", str(haproxy.ocsp_file),
                      "--haproxy-socket", str(haproxy.socket), log_dir=tmp_path) as sidecar:  # fmt: skip
        await sidecar.ready()
        await served(haproxy.port, HOST, first_at)
        assert haproxy.ocsp_file.read_bytes() == first

        second = pki.response(leaf, this_update=second_at, next_update=utc(days=1))

        async def kubelet_update() -> None:
            publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.ocsp-staple": second})

        got = await handshakes_across(haproxy.port, HOST, kubelet_update)
        assert got.failures == []
        assert None not in got.seen
        await served(haproxy.port, HOST, second_at)
        assert haproxy.ocsp_file.read_bytes() == second
        handovers = sidecar.metric('ocsp_stapler_sync_handovers_total{result="ok"}')

        # Another certificate's staple, an older one of ours, garbage: none is handed over.
        foreign = pki.response(pki.leaf("other.example.test"), this_update=utc(),
                               next_update=utc(days=1))  # fmt: skip
        older = pki.response(leaf, this_update=utc(minutes=-30), next_update=utc(days=1))
        looks = sidecar.metric("ocsp_stapler_sync_looks_total") or 0
        for n, staple in enumerate((foreign, older, b"\x30\x03abc"), start=1):
            publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.ocsp-staple": staple})
            await sidecar.metric_reaches("ocsp_stapler_sync_looks_total", looks + n)
        assert sidecar.metric("ocsp_stapler_sync_rejected_total") == 2  # foreign, garbage
        assert sidecar.metric('ocsp_stapler_sync_handovers_total{result="ok"}') == handovers
        assert await haproxy.this_update() == printed(second_at)
        assert haproxy.ocsp_file.read_bytes() == second

        # The CA now says revoked: by default (revokedAction: staple) that is served.
        revoked_at = utc(minutes=-1)
        revoked = pki.response(leaf, this_update=revoked_at, next_update=utc(days=1),
                               status="revoked")  # fmt: skip
        publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.ocsp-staple": revoked})
        await served(haproxy.port, HOST, revoked_at)
        assert sidecar.metric("ocsp_stapler_sync_stapling") == 1

        # The operator removed the staple (say, revokedAction: remove): HAProxy drops it now,
        # not 5 minutes before its nextUpdate a day from now.
        publish(volume, {"tls.crt": pki.chain_pem(leaf)})
        await served(haproxy.port, HOST, None)
        assert not haproxy.ocsp_file.exists()


@pytest.fixture
def nginx_site(pki: TestPKI, leaf: Issued, tmp_path: Path) -> tuple[Path, int]:
    site = tmp_path / "nginx"
    return site, nginx_servers.included_site(site, pki, leaf, HOST)


def _nginx_args(site: Path, volume: Path) -> list[str]:
    return ["--secret-dir", str(volume), "--out", str(site / "staple.der"),
            "--nginx-include", str(site / "stapling.conf"),
            "--nginx-pidfile", str(site / "nginx.pid")]  # fmt: skip


@pytest.fixture
def start_nginx(nginx_site: tuple[Path, int]) -> Iterator[Callable[[], None]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(nginx_servers.command(nginx_site[0]),
                                          stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


async def test_nginx_stops_stapling_a_staple_before_its_next_update(
    pki: TestPKI, leaf: Issued, nginx_site: tuple[Path, int], start_nginx: Callable[[], None],
    tmp_path: Path,
) -> None:  # fmt: skip
    """nginx itself would staple the file past nextUpdate: the sidecar turns stapling off."""
    site, port = nginx_site
    at = utc(minutes=-1)
    next_update = utc(seconds=8)
    short = pki.response(leaf, this_update=at, next_update=next_update)
    volume = _volume(tmp_path, pki, leaf, short)
    args = [*_nginx_args(site, volume), "--expiry-margin", "2"]
    with sync_sidecar(*args, log_dir=tmp_path) as sidecar:
        await sidecar.ready()  # the include exists: nginx can start
        start_nginx()
        await served(port, HOST, at)
        await served(port, HOST, None, timeout=20)  # 2 s before nextUpdate, bounded
        assert utc() < next_update  # let go before nextUpdate, not after
        assert not (site / "staple.der").exists()
        assert sidecar.metric("ocsp_stapler_sync_stapling") == 0
        assert "ssl_stapling_file" not in (site / "stapling.conf").read_text()


async def test_with_revoked_action_remove_a_revoked_answer_turns_nginx_stapling_off(
    pki: TestPKI, leaf: Issued, nginx_site: tuple[Path, int], start_nginx: Callable[[], None],
    tmp_path: Path,
) -> None:  # fmt: skip
    site, port = nginx_site
    good_at = utc(minutes=-5)
    volume = _volume(tmp_path, pki, leaf,
                     pki.response(leaf, this_update=good_at, next_update=utc(days=1)))  # fmt: skip
    env = {"OCSP_STAPLER_REVOKED_ACTION": "remove"}
    with sync_sidecar(*_nginx_args(site, volume), env=env, log_dir=tmp_path) as sidecar:
        await sidecar.ready()
        start_nginx()
        await served(port, HOST, good_at)
        revoked = pki.response(leaf, this_update=utc(minutes=-1), next_update=utc(days=1),
                               status="revoked")  # fmt: skip
        publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.ocsp-staple": revoked})
        await served(port, HOST, None)
        assert sidecar.metric("ocsp_stapler_sync_rejected_total") == 1


async def test_a_new_certificate_takes_the_old_staple_away_at_once(
    pki: TestPKI, leaf: Issued, tmp_path: Path
) -> None:
    """cert-manager renewed the certificate; the operator has not stapled the new one yet."""
    out = tmp_path / "out" / "site.ocsp"
    out.parent.mkdir()
    volume = _volume(tmp_path, pki, leaf,
                     pki.response(leaf, this_update=utc(), next_update=utc(days=1)))  # fmt: skip
    with sync_sidecar("--secret-dir", str(volume), "--out", str(out), log_dir=tmp_path) as car:
        await car.ready()
        assert out.exists()
        renewed = pki.leaf(HOST)
        old_staple = (volume / "tls.ocsp-staple").read_bytes()
        publish(volume, {"tls.crt": pki.chain_pem(renewed), "tls.ocsp-staple": old_staple})
        await car.metric_reaches("ocsp_stapler_sync_looks_total", 2)
        assert not out.exists()
        assert car.metric("ocsp_stapler_sync_stapling") == 0


async def test_a_staple_the_operator_removed_from_the_secret_is_taken_away(
    pki: TestPKI, leaf: Issued, tmp_path: Path
) -> None:
    """The key is gone from the Secret (e.g. revoked with revokedAction: remove): consumers
    staple nothing, rather than the last good answer until it expires."""
    out = tmp_path / "site.ocsp"
    volume = _volume(tmp_path, pki, leaf,
                     pki.response(leaf, this_update=utc(), next_update=utc(days=1)))  # fmt: skip
    with sync_sidecar("--secret-dir", str(volume), "--out", str(out), log_dir=tmp_path) as car:
        await car.ready()
        assert out.exists()
        publish(volume, {"tls.crt": pki.chain_pem(leaf), "tls.key": leaf.key_pem})
        await car.metric_reaches("ocsp_stapler_sync_looks_total", 2)
        assert not out.exists()
        assert car.metric("ocsp_stapler_sync_stapling") == 0


def _once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "sync", "--once", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


async def test_once_exits_0_after_a_hand_over_and_2_when_a_consumer_failed(
    pki: TestPKI, leaf: Issued, tmp_path: Path
) -> None:
    staple = pki.response(leaf, this_update=utc(), next_update=utc(days=1))
    volume = _volume(tmp_path, pki, leaf, staple)
    out = tmp_path / "site.pem.ocsp"
    done = _once("--secret-dir", str(volume), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == staple
    async with stats_socket(b"Permission denied.\n") as refusing:
        failed = await asyncio.to_thread(_once, "--secret-dir", str(volume), "--out", str(out),
                                         "--haproxy-socket", str(refusing))  # fmt: skip
    assert failed.returncode == 2
    assert "refused the staple: Permission denied" in failed.stderr
    not_yet = _once("--secret-dir", str(volume), "--out", str(out),
                    "--haproxy-socket", str(tmp_path / "not-started.sock"))  # fmt: skip
    assert not_yet.returncode == 0  # HAProxy reads the file when it starts
    usage = _once("--cert", str(volume / "tls.crt"), "--out", str(out))
    assert usage.returncode == 2
    assert "--secret-dir, or --cert and --staple" in usage.stderr
