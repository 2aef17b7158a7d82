"""Pushing a staple into a running HAProxy over its runtime API: no reload, no dropped handshake.

HAProxy reads ``<crt>.ocsp`` only at start and reload. ``set ssl ocsp-response <base64>`` on
its stats socket (``level admin``) replaces the response in memory. Measured on Debian's
HAProxy 2.6 (tests/consumers/test_haproxy.py):

* it refuses a response that is expired ("no longer valid"), unparseable, or about no
  certificate it serves, and keeps stapling the previous one;
* it stops stapling a response 5 minutes before its nextUpdate (its clock-skew margin), and
  starts with an expired ``.ocsp`` file by ignoring it: an expired staple is never served, so
  "no valid staple" needs no command (2.6 has none to delete one);
* the pushed response lives in memory only, so the file is written too (a reload reads it).

The answer is read whole (HAProxy closes the connection after one command) within a bounded
size and time; anything but "OCSP Response updated" is a refusal, reported with HAProxy's words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

from ocsp_stapler.consumers.errors import ConsumerError

TIMEOUT = 5.0
"""Seconds for connecting, sending and reading HAProxy's answer."""
MAX_ANSWER = 16 * 1024
UPDATED = "OCSP Response updated"
MAX_COMMAND = 15 * 1024
"""HAProxy reads one command line into a buffer of ``tune.bufsize`` (16 KiB by default)."""


async def set_ocsp_response(socket_path: Path, der: bytes, *, within: float = TIMEOUT) -> None:
    """Hand ``der`` to the HAProxy listening on ``socket_path`` (``ConsumerError`` if refused)."""
    command = b"set ssl ocsp-response " + base64.b64encode(der) + b"\n"
    if len(command) > MAX_COMMAND:
        raise ConsumerError(
            f"the staple ({len(der)} bytes) is too large for one HAProxy runtime API command"
        )
    try:
        async with asyncio.timeout(within):
            answer = await _exchange(socket_path, command)
    except TimeoutError:
        raise ConsumerError(f"HAProxy at {socket_path} did not answer within {within} s") from None
    except OSError as exc:
        raise ConsumerError(
            f"cannot reach HAProxy at {socket_path}: {exc.strerror or exc}"
        ) from None
    if UPDATED not in answer:
        said = " ".join(answer.split())[:200] or "nothing"
        raise ConsumerError(f"HAProxy at {socket_path} refused the staple: {said}")


async def _exchange(socket_path: Path, command: bytes) -> str:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(command)
        await writer.drain()
        answer = await reader.read(MAX_ANSWER)
        return answer.decode("utf-8", "replace")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
