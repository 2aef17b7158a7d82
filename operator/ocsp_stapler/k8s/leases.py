"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go does it.

Two or more operator replicas share one Lease; only its holder runs the reconciler. Why not
kopf's peering: peering only pauses handlers when it sees a peer of higher priority, each
replica still starts and runs its own reconciler, and a paused replica may have refreshes in
flight; it is a courtesy between operators, not a fence. A Lease is the Kubernetes primitive
for exactly one writer (cert-manager and controller-runtime use it), with optimistic
concurrency on its resourceVersion.

The timing argument (defaults: lease 15 s, renew deadline 10 s, retry 2 s):

* the holder counts its leadership from the *start* of its last successful renewal, and
  stops writing ``renew_deadline`` after it, whether or not it hears back: the fenced API
  refuses a write then, and cuts off one still in flight ``SAFETY`` before it;
* a standby takes over only after it has seen the Lease unchanged for ``lease_duration``,
  measured on its own monotonic clock from when *its read returned* with the change, which
  is after the renewal started (timed from before a slow read, a renewal made during it would
  be backdated: two leaders);
* a Lease deleted under them: the holder's fence closes at its next renewal attempt, and a
  standby that saw it creates a new one only a whole lease after it went.

So the old holder is silent for at least ``lease_duration - renew_deadline`` (5 s) before
anyone else can hold the Lease, whatever the two machines' wall clocks say; only the rates
of their monotonic clocks matter. A released Lease (holder cleared on SIGTERM) is taken at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from ocsp_stapler.k8s.client import (
    Api,
    ApiClient,
    ApiError,
    Conflict,
    JsonObject,
    NotFound,
    PatchType,
    resource_path,
)

logger = logging.getLogger(__name__)


_DELETED = ("deleted",)
"""The observed record of a Lease seen to go away."""

SAFETY = 1.0
"""Seconds of the fence's remaining time a write may not use: it must reach the server while
this replica still leads, so each write is cut off this long before the fence closes."""


def _micro_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NotLeader(ApiError):
    """A write refused because this process does not hold the Lease (any more)."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "NotLeader", message)


class LeaderElector:
    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry period < renew deadline < lease")
        self.api = api
        self.path = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                                  namespace=namespace, name=name)  # fmt: skip
        self.collection = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                                        namespace=namespace)  # fmt: skip
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.monotonic = monotonic
        self.wall = wall
        self.renewed_at: float | None = None
        """Monotonic time at the start of the last successful acquire or renewal."""
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.lost = asyncio.Event()

    def holds(self) -> bool:
        """Whether this process may write now (the fence)."""
        return self.write_window() > 0

    def write_window(self) -> float:
        """Seconds a write started now may take and still land while this replica leads."""
        at = self.renewed_at
        if at is None:
            return 0.0
        return max(0.0, at + self.renew_deadline - SAFETY - self.monotonic())

    def _spec(self, *, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": _micro_time(self.wall()),
            "leaseTransitions": transitions,
        }

    async def try_once(self) -> bool:
        """One acquire-or-renew attempt, bounded in time; whether this process holds it."""
        start = self.monotonic()
        try:
            async with asyncio.timeout(self.renew_deadline - self.retry_period):
                held = await self._try(start)
        except (ApiError, OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            logger.info("lease %s: attempt failed: %r", self.name, exc)
            return False
        if held:
            self.renewed_at = start
        return held

    async def _try(self, start: float) -> bool:
        try:
            lease = await self.api.get(self.path)
        except NotFound:
            return await self._create_after_deletion()
        # Observed now, after the read: a slow read may show a renewal made during it.
        seen = self.monotonic()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"),
                  spec.get("leaseTransitions"))  # fmt: skip
        if record != self._observed:
            self._observed, self._observed_at = record, seen
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        mine = holder == self.identity
        if not mine:
            self.renewed_at = None  # someone else's now, whatever this process thought
        if holder is not None and not mine and seen - self._observed_at < duration:
            return False  # held by another replica that renewed within its lease
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        acquired = spec.get("acquireTime") if mine else _micro_time(self.wall())
        body = {**lease, "spec": self._spec(acquire_time=acquired or "", transitions=transitions)}
        try:
            await self.api.replace(self.path, body)  # carries metadata.resourceVersion
        except Conflict:
            return False  # changed under us: look again next round
        if not mine:
            logger.info("lease %s acquired by %s (was %s)", self.name, self.identity, holder)
        return True

    async def _create_after_deletion(self) -> bool:
        """No Lease: create it, but where one was seen, only a whole lease after it went
        (its holder may still be writing until its renew deadline)."""
        self.renewed_at = None
        now_mono = self.monotonic()
        if self._observed is not None and self._observed != _DELETED:
            self._observed, self._observed_at = _DELETED, now_mono
        if self._observed == _DELETED and now_mono - self._observed_at < self.lease_duration:
            return False
        now = _micro_time(self.wall())
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": self._spec(acquire_time=now, transitions=0)}  # fmt: skip
        try:
            await self.api.create(self.collection, body)
        except Conflict:
            return False  # another replica created it first
        return True

    async def acquire(self, stopped: Callable[[], bool]) -> bool:
        """Wait as a standby until this process holds the Lease (True) or ``stopped()``."""
        while not stopped():
            if await self.try_once():
                return True
            for _ in range(max(1, round(self.retry_period / 0.1))):  # stop seen within 0.1 s
                if stopped():
                    return False
                await asyncio.sleep(0.1)
        return False

    async def keep(self) -> None:
        """Renew every retry period; set ``lost`` (and return) once the fence has closed."""
        while True:
            await asyncio.sleep(self.retry_period)
            await self.try_once()
            if not self.holds():
                logger.error("lease %s lost by %s: stopping (no write after this)",
                             self.name, self.identity)  # fmt: skip
                self.lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up (a clean stop): a standby takes it at its next try."""
        if not self.holds():
            return
        self.renewed_at = None  # no write from here on, whatever the answer
        with contextlib.suppress(ApiError, OSError, TimeoutError, aiohttp.ClientError, ValueError):
            async with asyncio.timeout(self.retry_period):
                lease = await self.api.get(self.path)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return
                released = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1,
                            "renewTime": _micro_time(self.wall())}  # fmt: skip
                await self.api.replace(self.path, {**lease, "spec": released})
                logger.info("lease %s released by %s", self.name, self.identity)


class FencedApi:
    """The reconciler's view of the API: reads pass; a write starts only while this replica
    leads, and is cut off (``NotLeader``) if it has not completed within the time it still
    leads, less ``SAFETY`` (a slow server or a full connection pool cannot carry a write past
    the fence). A replica that lost the Lease, or never had it, writes nothing."""

    def __init__(self, api: Api, write_window: Callable[[], float]) -> None:
        self.api = api
        self.write_window = write_window

    async def _fenced(
        self, what: str, path: str, write: Coroutine[Any, Any, JsonObject]
    ) -> JsonObject:
        window = self.write_window()
        if window <= 0:
            write.close()  # never sent
            raise NotLeader(f"not the leader: {what} {path} refused")
        try:
            async with asyncio.timeout(window):
                return await write
        except TimeoutError:
            raise NotLeader(f"the lease may end before {what} {path} lands: cut off") from None

    async def get(self, path: str, **params: str) -> JsonObject:
        return await self.api.get(path, **params)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self._fenced("create", path, self.api.create(path, body))

    async def patch(self, path: str, body: Any, *, patch_type: PatchType = "merge") -> JsonObject:
        return await self._fenced("patch", path, self.api.patch(path, body, patch_type=patch_type))

    async def delete(self, path: str) -> JsonObject:
        return await self._fenced("delete", path, self.api.delete(path))
