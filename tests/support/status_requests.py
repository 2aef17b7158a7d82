"""What a real TLS client (``openssl s_client -status``) is stapled by a server on loopback,
and the few ways the consumer tests look at it: wait for a staple, count failed handshakes
across a switch."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from support.kube import wait_for


async def stapled_this_update(port: int, host: str) -> str | None:
    """The thisUpdate of the staple served on ``port`` for ``host`` (None: no staple);
    ``ConnectionError`` when the handshake itself failed."""
    got = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", host, "-status"],
        input="", capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    if "CONNECTED" not in got.stdout or "Verify return code" not in got.stdout:
        raise ConnectionError(got.stderr[-300:] or got.stdout[-300:])
    if "OCSP Response Status: successful" not in got.stdout:
        return None
    for line in got.stdout.splitlines():
        if line.strip().startswith("This Update:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"a staple without thisUpdate:\n{got.stdout}")


def utc(**delta: float) -> datetime.datetime:
    """Now (whole seconds, as a response carries it) moved by ``delta``."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(**delta)


def printed(when: datetime.datetime) -> str:
    """How ``openssl s_client`` prints a time (``Dec  3 18:28:56 2026 GMT``)."""
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


async def served(port: int, host: str, expected: datetime.datetime | None, *,
                 timeout: float = 10.0, steady: int = 1) -> None:  # fmt: skip
    """Wait until the server staples the response of thisUpdate ``expected`` (None: none),
    ``steady`` handshakes in a row (after an nginx reload, old workers answer for a moment)."""
    want = printed(expected) if expected is not None else None
    in_a_row = 0

    async def current() -> bool | None:
        nonlocal in_a_row
        try:
            same = (await stapled_this_update(port, host)) == want
        except ConnectionError:
            same = False
        in_a_row = in_a_row + 1 if same else 0
        return in_a_row >= steady or None

    await wait_for(current, timeout=timeout, what=f"{host}:{port} to staple {want}")


@dataclass
class Handshakes:
    seen: list[str | None] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def handshakes_across(
    port: int, host: str, change: Callable[[], Awaitable[object]], *, rounds: int = 30
) -> Handshakes:
    """Two clients handshaking ``rounds`` times each (bounded) while ``change`` runs."""
    got = Handshakes()

    async def client() -> None:
        for _ in range(rounds):
            try:
                got.seen.append(await stapled_this_update(port, host))
            except ConnectionError as exc:
                got.failures.append(str(exc))

    async def changing() -> None:
        await asyncio.sleep(0.2)
        await change()

    await asyncio.gather(client(), client(), changing())
    return got
