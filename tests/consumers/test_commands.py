"""``--exec``: the user's command runs with the staple file's path, bounded in time; a failure
is a ``ConsumerError`` with what it said, and never stops the other consumers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ocsp_stapler.consumers.commands import run_command
from ocsp_stapler.consumers.delivery import Delivery
from ocsp_stapler.consumers.errors import ConsumerError
from support.unix_servers import stats_socket

RECORD = (
    "import os, sys; open(sys.argv[1], 'a').write(os.environ['OCSP_STAPLER_STAPLE_FILE'] + '\\n')"
)


async def test_the_command_gets_the_staple_file_or_an_empty_name(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    delivery = Delivery(staple_file=tmp_path / "staple.der",
                        command=(sys.executable, "-c", RECORD, str(log)))  # fmt: skip
    await delivery.hand_over(b"\x30\x00")
    await delivery.hand_over(None)
    assert log.read_text().splitlines() == [str(tmp_path / "staple.der"), ""]
    assert not (tmp_path / "staple.der").exists()


async def test_a_failing_command_says_its_exit_and_stderr(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import sys; sys.stderr.write('reload refused'); sys.exit(3)")
    with pytest.raises(ConsumerError, match="exited with 3: reload refused"):
        await run_command(argv, tmp_path / "staple.der")


async def test_a_hanging_command_is_killed(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import time; time.sleep(60)")
    with pytest.raises(ConsumerError, match="did not finish within 0.5 s"):
        await run_command(argv, None, within=0.5)


async def test_a_missing_program_is_a_consumer_error(tmp_path: Path) -> None:
    with pytest.raises(ConsumerError, match="cannot run"):
        await run_command((str(tmp_path / "absent"),), None)


async def test_one_failing_consumer_does_not_stop_the_others(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    async with stats_socket(b"Unknown command.\n") as refusing:
        delivery = Delivery(
            staple_file=tmp_path / "staple.der",
            haproxy_socket=refusing,
            command=(sys.executable, "-c", RECORD, str(log)),
        )
        with pytest.raises(ConsumerError, match="refused the staple: Unknown command"):
            await delivery.hand_over(b"\x30\x00")
    assert log.read_text() == f"{tmp_path / 'staple.der'}\n"  # the command still ran


async def test_an_haproxy_not_running_yet_is_no_failure(tmp_path: Path) -> None:
    """It reads the staple file, written first, when it starts."""
    delivery = Delivery(staple_file=tmp_path / "site.pem.ocsp",
                        haproxy_socket=tmp_path / "not-yet.sock")  # fmt: skip
    await delivery.hand_over(b"\x30\x00")
    assert delivery.staple_file.read_bytes() == b"\x30\x00"
    await delivery.hand_over(None)
    assert not delivery.staple_file.exists()


async def test_a_staple_that_cannot_be_written_reaches_no_one(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    delivery = Delivery(staple_file=tmp_path / "absent" / "staple.der",
                        command=(sys.executable, "-c", RECORD, str(log)))  # fmt: skip
    with pytest.raises(ConsumerError, match="cannot write"):
        await delivery.hand_over(b"\x30\x00")
    assert not log.exists()
