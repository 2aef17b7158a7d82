"""The operator's own timer wheel: one heap of due times, a fixed number of workers, fair turns.

Why not kopf timers or daemons: kopf puts a finalizer on every object that has them, and a
finalizer on a user's Secret makes it undeletable once the operator is gone. So handlers only
*schedule*; this module decides *when* work runs: each Secret has at most one due time, at
most one worker runs it at a time (a Secret rescheduled while running runs again after), and
``concurrency`` workers bound the load on responders and on the API server.

Why fair turns: the cluster is shared. Keys are grouped (the operator groups Secrets by
namespace), due keys wait in one queue per group, and free workers take the groups in turn
(round-robin), so a namespace with a thousand due Secrets does not push another namespace's
one Secret to the back. Turns alone do not help against work that *holds* workers (attempts
against hanging responders, each bounded only by the attempt deadline): so one group may hold
at most ``group_share(concurrency)`` workers at once, and the rest (a quarter, at least one)
are always there for the other groups. A new namespace's first attempt then starts at once
while the other namespaces leave a reserved worker free, and within one attempt deadline at
worst. The price is that a single namespace uses three quarters of the workers (24 of 32):
the workers mostly wait for responders and the API server, and at 10,000 Secrets the
operator's process already keeps this machine's cores busy, so the throughput is not bound by
their number. The same goes for name lookups, which hold threads beyond any deadline: each
worker's task names its group as the owner of its lookups (``net.lookups``).

Dispatch costs O(1) per run (a deque per group, a deque of groups whose turn is due); the
heap is O(log n) per due time, as before.

The clock is injected. The loop sleeps until the next due time by the real clock, capped, and
re-reads the injected clock on every ``wake()``, so tests move time without waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from ocsp_stapler.net.lookups import LOOKUP_OWNER

K = TypeVar("K")

logger = logging.getLogger(__name__)

CRASH_RETRY = datetime.timedelta(minutes=1)
"""After work raised (a bug, not a responder failure): retry then, doubling to the cap."""
CRASH_RETRY_CAP = datetime.timedelta(hours=1)
MAX_SLEEP = 30.0
"""Seconds: the loop re-checks the clock at least this often (resilient to clock jumps)."""


def group_share(concurrency: int) -> int:
    """Workers one group may hold at once: all but a quarter (at least one kept for others).

    1 of 2, 3 of 4, 24 of 32; with a single worker nothing can be kept back.
    """
    return max(1, concurrency - max(1, concurrency // 4))


def _one_group(_key: object) -> Hashable:
    return None


class Scheduler(Generic[K]):
    def __init__(
        self,
        *,
        work: Callable[[K], Awaitable[None]],
        clock: Callable[[], datetime.datetime],
        concurrency: int,
        group: Callable[[K], Hashable] | None = None,
    ) -> None:
        """``group`` names the group of a key (taken in turns, capped at ``group_share``);
        without it all keys are one group, which may use every worker."""
        self._work = work
        self._clock = clock
        self._concurrency = concurrency
        self._group = group or _one_group
        self._share = group_share(concurrency) if group is not None else concurrency
        self._heap: list[tuple[datetime.datetime, int, K]] = []
        self._due: dict[K, tuple[datetime.datetime, int]] = {}
        self._seq = itertools.count()
        self._ready: dict[Hashable, collections.deque[K]] = {}
        """Due keys waiting for a worker, per group, in the order they came due."""
        self._turns: collections.deque[Hashable] = collections.deque()
        """Groups with keys waiting and room under their share, in turn order (each once)."""
        self._holding: dict[Hashable, int] = {}
        """Workers each group holds now."""
        self._queued: set[K] = set()
        self._running: set[K] = set()
        self._rerun: set[K] = set()
        self._crashes: dict[K, int] = {}
        """Runs in a row that raised, per key (a bug of ours): they back off, logged once."""
        self._active = 0
        """Workers busy now (runs started and not yet finished)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatching = False
        self._sleeping_until: datetime.datetime | None = None
        """The due time the loop sleeps towards; a later one needs no wake-up (None: it is
        awake, or nothing is due)."""
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
        if self._sleeping_until is None or at < self._sleeping_until:
            self._wake.set()  # 10,000 Secrets rescheduled far ahead do not each wake the loop

    def run_now(self, key: K) -> None:
        self.schedule(key, self._clock())

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)
        self._rerun.discard(key)
        self._crashes.pop(key, None)

    def due_at(self, key: K) -> datetime.datetime | None:
        entry = self._due.get(key)
        return entry[0] if entry else None

    def wake(self) -> None:
        """Re-read the clock now (tests call this after moving a fake clock)."""
        self._wake.set()

    @property
    def busy(self) -> bool:
        return bool(self._queued or self._running)

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
        """Move every due key to its group's queue; return seconds until the next one."""
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
                self._enqueue(key)
        return None

    def _enqueue(self, key: K) -> None:
        group = self._group(key)
        waiting = self._ready.get(group)
        if waiting is None:
            waiting = self._ready[group] = collections.deque()
            if self._holding.get(group, 0) < self._share:
                self._turns.append(group)
        waiting.append(key)

    def _dispatch(self) -> None:
        """Give free workers to the groups in turn, each up to its share."""
        while self._dispatching and self._turns and self._active < self._concurrency:
            group = self._turns.popleft()
            waiting = self._ready[group]
            key = waiting.popleft()
            holding = self._holding[group] = self._holding.get(group, 0) + 1
            if not waiting:
                del self._ready[group]
            elif holding < self._share:
                self._turns.append(group)  # its next key waits for the others' turns
            self._queued.discard(key)
            self._running.add(key)
            self._active += 1
            task = asyncio.create_task(self._run_one(key, group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Dispatch forever (until cancelled)."""
        self._dispatching = True
        try:
            while True:
                self._wake.clear()
                delay = self._release_due()
                self._dispatch()
                if not self.busy:
                    self._idle.set()
                timeout = MAX_SLEEP if delay is None else min(delay, MAX_SLEEP)
                if delay is not None and not self._wake.is_set():
                    self._sleeping_until = self._clock() + datetime.timedelta(seconds=delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(timeout, 1e-6)):
                        await self._wake.wait()
                self._sleeping_until = None
        finally:
            self._dispatching = False
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_one(self, key: K, group: Hashable) -> None:
        LOOKUP_OWNER.set(group)  # this task's own context: its name lookups count for the group
        try:
            await self._work(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            crashes = self._crashes[key] = self._crashes.get(key, 0) + 1
            delay = min(CRASH_RETRY * 2 ** min(crashes - 1, 10), CRASH_RETRY_CAP)
            if crashes == 1:
                logger.exception("work for %s failed; retrying in %s", key, delay)
            else:  # the traceback was logged: one line per retry, less and less often
                logger.warning("work for %s failed again (%d in a row): %r", key, crashes, exc)
            self.schedule(key, self._clock() + delay)
        else:
            self._crashes.pop(key, None)
        finally:
            self._running.discard(key)
            self._active -= 1
            holding = self._holding[group] - 1
            if holding:
                self._holding[group] = holding
            else:
                del self._holding[group]
            if holding == self._share - 1 and group in self._ready:
                self._turns.append(group)  # it was held back at its share: its turn again
            if key in self._rerun:
                self._rerun.discard(key)
                self.run_now(key)
            # A free worker is given the next queued key here, so the dispatch loop sleeps on:
            # it wakes only for an earlier due time (``schedule``), not once per finished run.
            self._dispatch()
            if not self._queued and not self._running:
                self._idle.set()
