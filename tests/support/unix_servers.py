"""A stand-in for HAProxy's stats socket, for the faults the real one does not produce: it
answers every command with fixed words, or never answers."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def stats_socket(answer: bytes | None) -> AsyncIterator[Path]:
    """A unix socket answering ``answer`` to each command (None: reads, never answers)."""
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        if answer is None:
            await done.wait()
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    # A short directory: a unix socket path has ~100 bytes at most.
    path = Path(tempfile.mkdtemp(prefix="sock-", dir="/tmp")) / "s.sock"
    server = await asyncio.start_unix_server(serve, path=str(path))
    try:
        yield path
    finally:
        done.set()
        server.close()
        shutil.rmtree(path.parent, ignore_errors=True)
