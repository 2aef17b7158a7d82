"""The operator's own timer wheel: one heap of due times, a fixed pool of workers.

Why not kopf timers or daemons: kopf puts a finalizer on every object that has them, and a
finalizer on a user's Secret makes it undeletable once the operator is gone. So handlers only
*schedule*; this module decides *when* work runs: each Secret has at most one due time, at
most one worker runs it at a time (a Secret rescheduled while running runs again after), and
``concurrency`` workers bound the load on responders and on the API server.

The clock is injected. The loop sleeps until the next due time by the real clock, capped, and
re-reads the injected clock on every ``wake()``, so tests move time without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")

logger = logging.getLogger(__name__)

MAX_SLEEP = 30.0
"""Seconds: the loop re-checks the clock at least this often (resilient to clock jumps)."""


class Scheduler(Generic[K]):
    def __init__(
        self,
        *,
        work: Callable[[K], Awaitable[None]],
        clock: Callable[[], datetime.datetime],
        concurrency: int,
    ) -> None:
        self._work = work
        self._clock = clock
        self._concurrency = concurrency
        self._heap: list[tuple[datetime.datetime, int, K]] = []
        self._due: dict[K, tuple[datetime.datetime, int]] = {}
        self._seq = itertools.count()
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._rerun: set[K] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def schedule(self, key: K, at: datetime.datetime | None) -> None:
        """Run ``key`` at ``at`` (replacing its previous time); ``None`` cancels it."""
        if at is None:
            self._due.pop(key, None)
            return
        seq = next(self._seq)
        self._due[key] = (at, seq)
        heapq.heappush(self._heap, (at, seq, key))
        self._wake.set()

    def run_now(self, key: K) -> None:
        self.schedule(key, self._clock())

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)
        self._rerun.discard(key)

    def due_at(self, key: K) -> datetime.datetime | None:
        entry = self._due.get(key)
        return entry[0] if entry else None

    def wake(self) -> None:
        """Re-read the clock now (tests call this after moving a fake clock)."""
        self._wake.set()

    @property
    def busy(self) -> bool:
        return bool(self._queued or self._running or self._ready.qsize())

    async def idle(self) -> None:
        """Wait until nothing due now is queued or running."""
        while True:
            await self._idle.wait()
            if not self._busy_now():
                return
            self._idle.clear()

    def _busy_now(self) -> bool:
        if self._queued or self._running:
            return True
        now = self._clock()
        return bool(self._heap) and self._heap[0][0] <= now and self._valid(self._heap[0])

    def _valid(self, entry: tuple[datetime.datetime, int, K]) -> bool:
        at, seq, key = entry
        return self._due.get(key) == (at, seq)

    def _release_due(self) -> float | None:
        """Move every due key to the ready queue; return seconds until the next one."""
        now = self._clock()
        while self._heap:
            entry = self._heap[0]
            if not self._valid(entry):
                heapq.heappop(self._heap)
                continue
            at, _seq, key = entry
            if at > now:
                return (at - now).total_seconds()
            heapq.heappop(self._heap)
            del self._due[key]
            if key in self._running:
                self._rerun.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._idle.clear()
                self._ready.put_nowait(key)
        return None

    async def run(self) -> None:
        """Dispatch forever (until cancelled)."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self._concurrency)]
        try:
            while True:
                self._wake.clear()
                delay = self._release_due()
                if not self.busy:
                    self._idle.set()
                timeout = MAX_SLEEP if delay is None else min(delay, MAX_SLEEP)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self._work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("work for %s failed; retrying in a minute", key)
                self.schedule(key, self._clock() + datetime.timedelta(minutes=1))
            finally:
                self._running.discard(key)
                if key in self._rerun:
                    self._rerun.discard(key)
                    self.run_now(key)
                self._wake.set()
                if not self._queued and not self._running:
                    self._idle.set()
