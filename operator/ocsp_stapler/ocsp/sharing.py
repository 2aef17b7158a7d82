"""One fetch per certificate, however many Secrets hold it.

A wildcard certificate copied into 200 namespaces is one question to the CA, not 200. Callers
that ask about the same key while a fetch is in flight await that fetch's result instead of
starting their own (a "single flight"); the operator keys it by issuer and serial.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Coalesce concurrent calls with the same key into one run of the work."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def in_flight(self, key: K) -> bool:
        return key in self._running

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        future = self._running.get(key)
        if future is None:
            future = asyncio.ensure_future(work())
            self._running[key] = future
            future.add_done_callback(lambda _f: self._running.pop(key, None))
        # A caller that is cancelled must not cancel the shared work under the others.
        return await asyncio.shield(future)
