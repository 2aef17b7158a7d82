"""Pushing a staple into a running HAProxy over its runtime API: no reload, no dropped handshake.

HAProxy reads ``<crt>.ocsp`` only at start and reload. ``set ssl ocsp-response <base64>`` on
its stats socket (``level admin``) replaces the response in memory. Measured on Debian's
HAProxy 2.6 (tests/consumers/test_haproxy.py):

* it refuses a response that is expired ("no longer valid"), unparseable, or about no
  certificate it serves, and keeps stapling the previous one;
* it stops stapling a response 5 minutes before its nextUpdate (its clock-skew margin), and
  starts with an expired ``.ocsp`` file by ignoring it: an expired staple is never served, so
  "no valid staple" needs no command (2.6 has none to delete one);
* the pushed response lives in memory only, so the file is written too (a reload reads it);
* it refuses every push ("Certificate ID does not match any certificate or issuer") for a
  certificate that had no ``.ocsp`` file when it started, until a certificate transaction
  with an empty ``<crt>.ocsp`` payload (``set ssl cert`` + ``commit ssl cert``) opens the
  certificate's OCSP slot; that transaction leaves a staple already held in place. So a
  sidecar that starts after HAProxy, or an HAProxy started while no valid staple existed,
  still gets each staple with no reload and no expired file written to make room for it;
* a transaction replacing the certificate with its own file (``set ssl cert <crt> <<PEM``,
  ``commit``) drops the response it held: that is how "there is no valid staple now" (a
  revocation under ``revokedAction: remove``, a staple the operator removed) reaches a
  running HAProxy before the old response expires (``withdraw_staple``). The slot is opened
  again only by the next push: opened at once, while connections made before still hold the
  old context, it can bring the old response back (seen under load). The file holds the
  private key: it is sent to HAProxy's own admin socket, which loaded it anyway, and never
  logged.

No socket, or one nobody listens on, is ``NotRunning``: HAProxy reads the ``.ocsp`` file,
written first, when it starts. The answer is read whole (HAProxy closes the connection after
one command) within a bounded size and time; anything but "OCSP Response updated" is a
refusal, reported with HAProxy's words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

from ocsp_stapler.consumers.errors import ConsumerError, NotRunning

TIMEOUT = 5.0
"""Seconds for connecting, sending and reading HAProxy's answer."""
MAX_ANSWER = 16 * 1024
UPDATED = "OCSP Response updated"
MAX_COMMAND = 15 * 1024
"""HAProxy reads one command line into a buffer of ``tune.bufsize`` (16 KiB by default)."""


NO_SLOT = "does not match any certificate"
COMMITTED = "Success!"


async def set_ocsp_response(
    socket_path: Path, der: bytes, *, within: float = TIMEOUT, certificate: Path | None = None
) -> None:
    """Hand ``der`` to the HAProxy listening on ``socket_path`` (``ConsumerError`` if refused).

    ``certificate``: the ``crt`` path as HAProxy's configuration names it; given, a refusal
    for want of an OCSP slot opens one and pushes again (once)."""
    command = b"set ssl ocsp-response " + base64.b64encode(der) + b"\n"
    if len(command) > MAX_COMMAND:
        raise ConsumerError(
            f"the staple ({len(der)} bytes) is too large for one HAProxy runtime API command"
        )
    answer = await _ask(socket_path, command, within)
    if UPDATED not in answer and NO_SLOT in answer and certificate is not None:
        await open_ocsp_slot(socket_path, certificate, within=within)
        answer = await _ask(socket_path, command, within)
    if UPDATED not in answer:
        raise ConsumerError(f"HAProxy at {socket_path} refused the staple: {_said(answer)}")


async def open_ocsp_slot(socket_path: Path, certificate: Path, *, within: float = TIMEOUT) -> None:
    """Make HAProxy keep an OCSP response for ``certificate`` (see the module's notes)."""
    name = _command_name(certificate)
    await _ask(socket_path, f"set ssl cert {name}.ocsp <<\n\n".encode(), within)
    answer = await _ask(socket_path, f"commit ssl cert {name}\n".encode(), within)
    if COMMITTED not in answer:
        raise ConsumerError(
            f"HAProxy at {socket_path} opened no OCSP slot for {name}: {_said(answer)}"
        )


MAX_CERTIFICATE_FILE = 64 * 1024
"""A chain and its key; HAProxy's command buffer could not take more anyway."""


async def withdraw_staple(socket_path: Path, certificate: Path, *, within: float = TIMEOUT) -> None:
    """Make HAProxy staple nothing for ``certificate`` until the next push."""
    if not _present(socket_path):
        raise NotRunning(f"HAProxy is not running at {socket_path}: no socket")
    name = _command_name(certificate)
    pem = _certificate_payload(certificate)
    await _ask(socket_path, f"set ssl cert {name} <<\n".encode() + pem + b"\n\n", within)
    answer = await _ask(socket_path, f"commit ssl cert {name}\n".encode(), within)
    if COMMITTED not in answer:
        await _ask(socket_path, f"abort ssl cert {name}\n".encode(), within)
        raise ConsumerError(
            f"HAProxy at {socket_path} did not drop the staple of {name}: {_said(answer)}"
        )


def _present(path: Path) -> bool:
    return path.exists()


def _certificate_payload(certificate: Path) -> bytes:
    """The certificate file as one runtime API payload (a blank line would end it)."""
    try:
        with certificate.open("rb") as handle:
            data = handle.read(MAX_CERTIFICATE_FILE + 1)
    except OSError as exc:
        raise ConsumerError(f"cannot read HAProxy's certificate {certificate}: "
                            f"{exc.strerror or exc}") from None  # fmt: skip
    if len(data) > MAX_CERTIFICATE_FILE or b"PRIVATE KEY-----" not in data:
        raise ConsumerError(
            f"{certificate} is not a certificate with its key in one PEM file of at most "
            f"{MAX_CERTIFICATE_FILE} bytes: HAProxy cannot be told to drop its staple"
        )
    return b"\n".join(line for line in data.splitlines() if line.strip())


def _command_name(certificate: Path) -> str:
    name = str(certificate)
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise ConsumerError(f"HAProxy's certificate path {name!r} cannot be named in a command")
    return name


def _said(answer: str) -> str:
    return " ".join(answer.split())[:200] or "nothing"


async def _ask(socket_path: Path, command: bytes, within: float) -> str:
    try:
        async with asyncio.timeout(within):
            return await _exchange(socket_path, command)
    except TimeoutError:
        raise ConsumerError(f"HAProxy at {socket_path} did not answer within {within} s") from None
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NotRunning(f"HAProxy is not running at {socket_path}: {exc.strerror}") from None
    except OSError as exc:
        raise ConsumerError(
            f"cannot reach HAProxy at {socket_path}: {exc.strerror or exc}"
        ) from None


async def _exchange(socket_path: Path, command: bytes) -> str:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    try:
        writer.write(command)
        await writer.drain()
        answer = b""
        while len(answer) < MAX_ANSWER:  # HAProxy closes after answering one command
            chunk = await reader.read(MAX_ANSWER - len(answer))
            if not chunk:
                break
            answer += chunk
        return answer.decode("utf-8", "replace")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
