"""Running the user's command after a new staple (``--exec``), for any other consumer.

The command is an argument vector, never a shell line; it gets the staple file's path in
``OCSP_STAPLER_STAPLE_FILE`` (empty when there is no valid staple), a bounded time, and no
stdin. A non-zero exit or a timeout is a ``ConsumerError`` with the end of its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from ocsp_stapler.consumers.errors import ConsumerError

TIMEOUT = 60.0
STAPLE_FILE_ENV = "OCSP_STAPLER_STAPLE_FILE"


async def run_command(
    argv: Sequence[str], staple_file: Path | None, *, within: float = TIMEOUT
) -> None:
    env = {**os.environ, STAPLE_FILE_ENV: str(staple_file) if staple_file else ""}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise ConsumerError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(within):
            _, stderr = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise ConsumerError(f"{argv[0]} did not finish within {within} s; killed") from None
    if process.returncode != 0:
        said = " ".join(stderr[-300:].decode("utf-8", "replace").split()) or "no output"
        raise ConsumerError(f"{argv[0]} exited with {process.returncode}: {said}")
