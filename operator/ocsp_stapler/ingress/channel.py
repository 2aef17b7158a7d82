"""Messages between the supervisor and its workers: length-prefixed JSON over a socket pair.

The supervisor sends configuration snapshots; workers send metric snapshots back. JSON keeps the
messages inspectable; the 4-byte length prefix keeps framing trivial. Messages are bounded.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_MESSAGE = 64 * 1024 * 1024
_LEN = struct.Struct("!I")


async def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    writer.write(_LEN.pack(len(data)) + data)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at end of stream."""
    try:
        size = _LEN.unpack(await reader.readexactly(_LEN.size))[0]
        if size > MAX_MESSAGE:
            raise ValueError(f"message of {size} bytes is too large")
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message
