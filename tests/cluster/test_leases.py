"""Leader election (``k8s.leases``) against the real kube-apiserver's Lease API, with each
replica's monotonic clock injected: the timing rules are checked exactly, without waiting,
while creation races and resourceVersion conflicts are the real server's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.k8s.leases import FencedApi, LeaderElector, NotLeader, WriteFence

LEASE, DEADLINE, RETRY = 15.0, 10.0, 2.0


class Mono:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elector(api: ApiClient, namespace: str, identity: str, clock: Mono) -> LeaderElector:
    return LeaderElector(api, namespace=namespace, name="ocsp-stapler-operator",
                         identity=identity, lease_duration=LEASE, renew_deadline=DEADLINE,
                         retry_period=RETRY, monotonic=clock)  # fmt: skip


async def _first(elector: LeaderElector, clock: Mono) -> None:
    """The first election: no Lease yet, so it is created only a lease after it was found
    missing (it could have been deleted under a holder still writing)."""
    assert not await elector.try_once()
    clock.now += LEASE - 0.001
    assert not await elector.try_once()
    clock.now += 0.001
    assert await elector.try_once()


async def _holder_and_standby(
    api: ApiClient, namespace: str
) -> tuple[LeaderElector, LeaderElector, Mono, Mono]:
    """Replica a holds the Lease; b has seen a's record once (its wait starts there)."""
    clock_a, clock_b = Mono(), Mono()
    a, b = _elector(api, namespace, "a", clock_a), _elector(api, namespace, "b", clock_b)
    await _first(a, clock_a)
    assert a.holds()
    assert not await b.try_once()
    return a, b, clock_a, clock_b


async def test_one_holder_and_a_standby_takes_over_only_after_a_silent_lease(
    api: ApiClient, namespace: str
) -> None:
    a, b, clock_a, clock_b = await _holder_and_standby(api, namespace)
    for _ in range(5):  # a keeps renewing: b never takes it, however long it waits
        clock_a.now += RETRY
        clock_b.now += LEASE + 1
        assert await a.try_once()
        assert not await b.try_once()
    # a goes silent (killed, partitioned, stopped): it stops writing at its renew deadline ...
    clock_a.now += DEADLINE
    assert not a.holds()
    # ... and b, whose clock ran the same, may take over only a lease later.
    clock_b.now += DEADLINE
    assert not await b.try_once()
    clock_b.now += LEASE - DEADLINE
    assert await b.try_once()
    assert b.holds()
    assert not a.holds()
    lease = await api.get(b.path)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    # a comes back: it sees b's record, not its own, and stays a standby.
    assert not await a.try_once()
    assert not a.holds()


async def test_a_released_lease_is_taken_at_once(api: ApiClient, namespace: str) -> None:
    a, b, _clock_a, _clock_b = await _holder_and_standby(api, namespace)
    await a.release()
    assert not a.holds()  # the fence closes before the release is even sent
    assert await b.try_once()  # no lease to wait out
    assert (await api.get(b.path))["spec"]["holderIdentity"] == "b"


async def test_a_step_down_lets_the_write_in_flight_land_before_the_lease_goes(
    api: ApiClient, namespace: str
) -> None:
    a, b, _clock_a, _clock_b = await _holder_and_standby(api, namespace)
    landed = asyncio.Event()
    holder_when_landed: list[str | None] = []

    class Slow:
        async def patch(self, path: str, body: Any, *, patch_type: str = "merge") -> Any:
            await asyncio.sleep(0.3)
            holder_when_landed.append((await api.get(a.path))["spec"].get("holderIdentity"))
            landed.set()
            return {}

    fenced = FencedApi(Slow(), a.fence)  # type: ignore[arg-type]
    in_flight = asyncio.create_task(fenced.patch("/secret", {}))
    await asyncio.sleep(0)  # the write has started
    await a.step_down()
    assert landed.is_set()
    assert holder_when_landed == ["a"]  # it landed while a held the Lease
    await in_flight
    with pytest.raises(NotLeader, match="refused"):
        await fenced.patch("/secret", {})  # nothing starts after the step-down
    assert (await api.get(a.path))["spec"].get("holderIdentity") is None
    assert await b.try_once()  # released: no lease to wait out


async def test_racing_replicas_end_with_exactly_one_holder(api: ApiClient, namespace: str) -> None:
    clocks = [Mono() for _ in range(4)]
    electors = [_elector(api, namespace, f"r{i}", clock) for i, clock in enumerate(clocks)]
    assert not any(await asyncio.gather(*(e.try_once() for e in electors)))  # none exists
    for clock in clocks:
        clock.now += LEASE
    won = await asyncio.gather(*(e.try_once() for e in electors))
    assert sum(won) == 1  # the server's create (and resourceVersion) decide
    holder = (await api.get(electors[0].path))["spec"]["holderIdentity"]
    assert holder == f"r{won.index(True)}"


async def test_keep_sets_lost_when_renewals_stop_succeeding(api: ApiClient, namespace: str) -> None:
    """Renewals refused (the Lease taken over behind its back): ``lost`` is set and the fence
    is closed, so the operator stops before the new holder starts."""
    clock_a = Mono()
    a = LeaderElector(api, namespace=namespace, name="kept", identity="a", lease_duration=3.0,
                      renew_deadline=0.2, retry_period=0.05, monotonic=clock_a)  # fmt: skip
    assert not await a.try_once()
    clock_a.now += 3.0
    assert await a.try_once()
    lease = await api.get(a.path)
    lease["spec"]["holderIdentity"] = "intruder"
    await api.replace(a.path, lease)
    keeping = asyncio.create_task(a.keep())
    for _ in range(100):  # bounded: the injected clock runs ahead of the renew deadline
        clock_a.now += 0.05
        await asyncio.sleep(0.06)
        if keeping.done():
            break
    assert keeping.done()
    assert a.lost.is_set()
    assert not a.holds()


def test_the_timing_must_leave_a_silent_gap() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease"):
        LeaderElector(None, namespace="n", name="l", identity="i",  # type: ignore[arg-type]
                      lease_duration=10, renew_deadline=10, retry_period=2)  # fmt: skip


async def test_a_standby_times_its_sighting_from_after_a_slow_read(
    api: ApiClient, namespace: str
) -> None:
    """A renewal made while the standby's read was in flight is not backdated to the read's
    start: the standby waits a whole lease from when it saw it."""
    clock_a, clock_b = Mono(), Mono()
    a = _elector(api, namespace, "a", clock_a)
    await _first(a, clock_a)

    class SlowReads:  # the standby's view of the API: each read takes 7 s of its clock
        async def get(self, path: str) -> Any:
            clock_b.now += 7
            return await api.get(path)

        def __getattr__(self, name: str) -> Any:
            return getattr(api, name)

    b = _elector(SlowReads(), namespace, "b", clock_b)  # type: ignore[arg-type]
    assert not await b.try_once()  # saw a's record at 1007 (not 1000)
    clock_b.now = 1000 + 7 + LEASE - 1 - 7  # the next read returns 1 s short of a lease
    assert not await b.try_once()
    clock_b.now += 1
    assert await b.try_once()


async def test_a_deleted_lease_is_recreated_only_a_lease_later(
    api: ApiClient, namespace: str
) -> None:
    a, b, clock_a, clock_b = await _holder_and_standby(api, namespace)
    await api.delete(a.path)  # kubectl delete lease, a cleanup tool
    assert not await b.try_once()  # its holder may still be writing: wait it out
    fresh_clock = Mono()
    fresh = _elector(api, namespace, "fresh", fresh_clock)  # never saw it: a rollout's new pod
    assert not await fresh.try_once()
    assert a.holds()  # until a's next renewal attempt, a may still write: nobody else may
    clock_b.now += LEASE
    assert await b.try_once()  # a is silent (dead): a lease after the deletion, b holds it
    fresh_clock.now += LEASE
    assert not await fresh.try_once()  # b's now, renewed within its lease
    clock_a.now += RETRY
    assert not await a.try_once()  # a comes back to b's record: its fence closes at once
    assert not a.holds()


async def test_a_write_that_would_land_after_the_fence_is_cut_off() -> None:
    window = [5.0]
    calls: list[str] = []

    class Slow:
        async def patch(self, path: str, body: Any, *, patch_type: str = "merge") -> Any:
            calls.append(path)
            await asyncio.sleep(0.5)  # a slow server, a full connection pool
            return {}

    fenced = FencedApi(Slow(), WriteFence(lambda: window[0]))  # type: ignore[arg-type]
    window[0] = 0.1
    with pytest.raises(NotLeader, match="cut off"):
        await fenced.patch("/a", {})
    window[0] = 0.0
    with pytest.raises(NotLeader, match="refused"):
        await fenced.patch("/b", {})
    assert calls == ["/a"]  # the second was never sent


async def test_a_released_lease_is_not_taken_back_and_the_handover_is_no_loss(
    api: ApiClient, namespace: str
) -> None:
    """step_down while the keeper still runs (kopf's shutdown comes after it): the keeper's
    next attempt must neither re-take the Lease nor report it lost."""
    clock = Mono()
    a = _elector(api, namespace, "a", clock)
    await _first(a, clock)
    a.retry_period = 0.05  # the keeper's next attempt comes at once
    keeper = asyncio.create_task(a.keep())
    await a.step_down()
    assert not await a.try_once()
    await asyncio.wait_for(keeper, 5)  # it ends at its next attempt ...
    assert not a.lost.is_set()  # ... as a handover, not a loss
    lease = await api.get(a.path)
    assert lease["spec"].get("holderIdentity") is None
