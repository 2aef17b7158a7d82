"""The scheduler on its own: fair turns across groups, a share per group, one run per key.

No cluster and no sleeps: work that should block awaits an Event the test holds, and the test
waits (bounded) for the Events the work sets, so each test is exact whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.controller.scheduling import Scheduler, group_share
from support.clocks import FakeClock

WAIT = 5.0
"""Seconds any awaited condition may take before the test fails (it takes microseconds)."""


class Work:
    """Work the test controls: each key's run records itself, then waits for its gate."""

    def __init__(self) -> None:
        self.started: list[SecretRef] = []
        self.finished: list[SecretRef] = []
        self.running: set[SecretRef] = set()
        self.most_at_once: dict[SecretRef, int] = {}
        self.gates: dict[SecretRef, asyncio.Event] = {}
        self.blocking: set[str] = set()
        """Namespaces whose runs wait for their gate (the others return at once)."""
        self._changed = asyncio.Event()

    def gate(self, ref: SecretRef) -> asyncio.Event:
        return self.gates.setdefault(ref, asyncio.Event())

    async def __call__(self, ref: SecretRef) -> None:
        self.started.append(ref)
        self.running.add(ref)
        at_once = sum(r == ref for r in self.started) - sum(r == ref for r in self.finished)
        self.most_at_once[ref] = max(self.most_at_once.get(ref, 0), at_once)
        self._changed.set()
        try:
            if ref.namespace in self.blocking:
                await self.gate(ref).wait()
        finally:
            self.running.discard(ref)
            self.finished.append(ref)
            self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def loop() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), WAIT)
        except TimeoutError:
            raise AssertionError(f"not within {WAIT} s: {what}") from None


def refs(namespace: str, count: int) -> list[SecretRef]:
    return [SecretRef(namespace=namespace, name=f"s{i}") for i in range(count)]


def by_namespace(ref: SecretRef) -> str:
    return ref.namespace


SchedulerFactory = Callable[..., Awaitable[Scheduler[SecretRef]]]


@pytest.fixture
async def running() -> AsyncIterator[SchedulerFactory]:
    """Start schedulers on this loop; every one is stopped after the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(work: Work, *, concurrency: int, grouped: bool = True) -> Scheduler[SecretRef]:
        scheduler: Scheduler[SecretRef] = Scheduler(
            work=work,
            clock=FakeClock(),
            concurrency=concurrency,
            group=by_namespace if grouped else None,
        )
        tasks.append(asyncio.create_task(scheduler.run()))
        return scheduler

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(("concurrency", "share"), [(1, 1), (2, 1), (3, 2), (4, 3), (32, 24)])
def test_a_group_may_hold_all_workers_but_a_quarter(concurrency: int, share: int) -> None:
    assert group_share(concurrency) == share


async def test_a_blocked_namespace_does_not_starve_a_later_one(
    running: SchedulerFactory,
) -> None:
    work = Work()
    work.blocking = {"a"}  # every attempt in namespace a hangs (until the test ends)
    scheduler = await running(work, concurrency=2)
    hostile = refs("a", 10)
    for ref in hostile:
        scheduler.run_now(ref)
    await work.until(lambda: len(work.started) >= 1, "namespace a's first run")

    late = SecretRef(namespace="b", name="first")
    scheduler.run_now(late)
    await work.until(lambda: late in work.finished, "namespace b's run")

    assert work.running == {hostile[0]}  # a's run is still blocked: b ran beside it
    assert work.started == [hostile[0], late]  # a holds its share (1 of 2), not both workers
    for ref in hostile:
        work.gate(ref).set()
    await asyncio.wait_for(scheduler.idle(), WAIT)
    assert sorted(work.finished) == sorted([*hostile, late])


async def test_runs_take_turns_across_namespaces(running: SchedulerFactory) -> None:
    work = Work()
    scheduler = await running(work, concurrency=1)
    for namespace in ("a", "b", "c"):  # all due at once, a's first
        for ref in refs(namespace, 3):
            scheduler.run_now(ref)
    await asyncio.wait_for(scheduler.idle(), WAIT)
    assert [f"{r.namespace}{r.name[1:]}" for r in work.started] == [
        "a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2",
    ]  # fmt: skip


async def test_a_namespace_alone_keeps_to_its_share_and_queues_the_rest(
    running: SchedulerFactory,
) -> None:
    work = Work()
    work.blocking = {"a"}
    scheduler = await running(work, concurrency=4)
    hostile = refs("a", 6)
    for ref in hostile:
        scheduler.run_now(ref)
    await work.until(lambda: len(work.started) == 3, "three of a's runs")
    assert scheduler.busy
    work.gate(hostile[0]).set()  # one ends: the next of a's takes its worker, in order
    await work.until(lambda: len(work.started) == 4, "a's fourth run")
    assert work.started == hostile[:4]
    assert len(work.running) == 3
    for ref in hostile:
        work.gate(ref).set()
    await asyncio.wait_for(scheduler.idle(), WAIT)
    assert work.started == hostile


async def test_without_groups_every_worker_is_used(running: SchedulerFactory) -> None:
    work = Work()
    work.blocking = {"a"}
    scheduler = await running(work, concurrency=2, grouped=False)
    hostile = refs("a", 3)
    for ref in hostile:
        scheduler.run_now(ref)
    await work.until(lambda: len(work.running) == 2, "two runs at once")
    for ref in hostile:
        work.gate(ref).set()
    await asyncio.wait_for(scheduler.idle(), WAIT)
    assert work.started == hostile


async def test_a_key_runs_once_at_a_time_and_again_after(running: SchedulerFactory) -> None:
    work = Work()
    work.blocking = {"a"}
    scheduler = await running(work, concurrency=4)
    ref = SecretRef(namespace="a", name="busy")
    scheduler.run_now(ref)
    await work.until(lambda: ref in work.running, "the first run")
    scheduler.run_now(ref)  # due again while it runs: twice, to be sure
    scheduler.run_now(ref)
    other = SecretRef(namespace="b", name="other")
    scheduler.run_now(other)  # passes through the loop after the reruns were released
    await work.until(lambda: other in work.finished, "a run released after the reruns")
    assert work.started.count(ref) == 1  # no second run beside the first
    work.gate(ref).set()
    await work.until(lambda: work.started.count(ref) == 2, "the run after")
    await asyncio.wait_for(scheduler.idle(), WAIT)
    assert work.started.count(ref) == 2  # the two reschedules made one more run, not two
    assert work.most_at_once[ref] == 1


async def test_failing_work_is_retried_a_minute_later(running: SchedulerFactory) -> None:
    async def failing(_ref: SecretRef) -> None:
        raise RuntimeError("boom")

    clock = FakeClock()
    scheduler: Scheduler[SecretRef] = Scheduler(
        work=failing, clock=clock, concurrency=2, group=by_namespace
    )
    task = asyncio.create_task(scheduler.run())
    try:
        ref = SecretRef(namespace="a", name="x")
        scheduler.run_now(ref)
        await asyncio.wait_for(scheduler.idle(), WAIT)
        assert scheduler.due_at(ref) == clock() + datetime.timedelta(minutes=1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_failing_work_backs_off_and_logs_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def failing(_ref: SecretRef) -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise RuntimeError("boom")

    clock = FakeClock()
    scheduler: Scheduler[SecretRef] = Scheduler(
        work=failing, clock=clock, concurrency=2, group=by_namespace
    )
    task = asyncio.create_task(scheduler.run())
    ref = SecretRef(namespace="a", name="x")
    waits = []
    try:
        with caplog.at_level(logging.WARNING, logger="ocsp_stapler.controller.scheduling"):
            scheduler.run_now(ref)
            for _ in range(4):
                await asyncio.wait_for(scheduler.idle(), WAIT)
                due = scheduler.due_at(ref)
                assert due is not None
                waits.append(due - clock())
                clock.advance(due - clock())
                scheduler.wake()
            await asyncio.wait_for(scheduler.idle(), WAIT)
        assert [w / datetime.timedelta(minutes=1) for w in waits] == [1, 2, 4, 8]
        assert calls == 5  # the fifth run succeeded: nothing more is due
        assert scheduler.due_at(ref) is None
        tracebacks = [r for r in caplog.records if r.exc_info]
        assert len(tracebacks) == 1
        assert sum("failed again" in r.getMessage() for r in caplog.records) == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
