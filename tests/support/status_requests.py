"""What a real TLS client (``openssl s_client -status``) is stapled by a server on loopback."""

from __future__ import annotations

import asyncio
import subprocess


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
