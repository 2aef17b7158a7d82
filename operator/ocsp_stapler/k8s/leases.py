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
* a Lease deleted under them: the holder's fence closes at its next renewal attempt, and
  any replica creates a new one only a whole lease after it found it missing (one that never
  saw the Lease cannot tell a deletion from a first install, so a first election waits a
  lease too).

So the old holder is silent for at least ``lease_duration - renew_deadline`` (5 s) before
anyone else can hold the Lease, whatever the two machines' wall clocks say; only the rates
of their monotonic clocks matter. A released Lease (holder cleared on SIGTERM) is taken at
once, and without waiting for the holder's shutdown: a stop closes the fence, waits for the
writes in flight (each bounded by its window) and releases the Lease first (``step_down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ocsp_stapler.k8s.client import (
    REQUEST_ERRORS,
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
        self.released = False
        """Given up for good (a clean stop): no attempt takes the Lease again."""
        self.attempted_at = monotonic()
        """Monotonic time the last attempt ended (liveness of a standby's loop)."""
        self._last_failure: str | None = None
        self.fence = WriteFence(self.write_window)
        """What the reconciler's writes go through (``FencedApi``)."""

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
        if self.released:
            return False
        start = self.monotonic()
        try:
            async with asyncio.timeout(self.renew_deadline - self.retry_period):
                held = await self._try(start)
        except REQUEST_ERRORS as exc:
            self._failed(exc)
            return False
        finally:
            self.attempted_at = self.monotonic()
        self._last_failure = None
        if held:
            self.renewed_at = start
        return held

    def _failed(self, exc: BaseException) -> None:
        """Log a failure once while it repeats (every retry period otherwise); a refusal by
        RBAC is a broken install, not a blip: an error."""
        what = f"{type(exc).__name__}: {exc}"
        if what == self._last_failure:
            logger.debug("lease %s: attempt failed again: %s", self.name, what)
            return
        self._last_failure = what
        refused = isinstance(exc, ApiError) and exc.status in (401, 403)
        logger.log(logging.ERROR if refused else logging.WARNING,
                   "lease %s: attempt failed%s: %s", self.name,
                   " (is the Role for coordination.k8s.io leases installed?)" if refused else "",
                   what)  # fmt: skip

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
        """No Lease: create it, but only a whole lease after this process first found it
        missing. One seen before was deleted, and its holder may still be writing until its
        renew deadline; a process that never saw one cannot tell a first install from a
        deletion (a rollout's new pod, a restart), so it waits too: the first election of an
        install costs one lease duration."""
        self.renewed_at = None
        now_mono = self.monotonic()
        if self._observed != _DELETED:
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
        """Wait as a standby until this process holds the Lease (True) or ``stopped()``.

        Between attempts it watches the Lease: one released (a clean stop) or deleted is
        tried at once, not at the next retry period, so a rolling update hands over in about
        the old leader's shutdown time. Polling stays the rule; the watch only hurries it."""
        released = asyncio.Event()
        watcher = asyncio.create_task(self._watch_for_release(released), name="lease-watch")
        try:
            while not stopped():
                released.clear()
                if await self.try_once():
                    return True
                for _ in range(max(1, round(self.retry_period / 0.1))):  # stop seen in 0.1 s
                    if stopped():
                        return False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(released.wait(), 0.1)
                    if released.is_set():
                        break
            return False
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _watch_for_release(self, released: asyncio.Event) -> None:
        params = {"fieldSelector": f"metadata.name={self.name}"}
        while True:
            try:
                async for event in self.api.watch(self.collection, params=params,
                                                  timeout_seconds=120):  # fmt: skip
                    kind = event.get("type")
                    spec = (event.get("object") or {}).get("spec") or {}
                    if kind == "DELETED" or (
                        kind in ("ADDED", "MODIFIED") and not spec.get("holderIdentity")
                    ):
                        released.set()
            except REQUEST_ERRORS as exc:
                logger.debug("lease %s: watch ended: %r", self.name, exc)
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew every retry period; set ``lost`` (and return) once the fence has closed."""
        while True:
            await asyncio.sleep(self.retry_period)
            await self.try_once()
            if self.released:
                return  # handed over: not lost
            if not self.holds():
                logger.error("lease %s lost by %s: stopping (no write after this)",
                             self.name, self.identity)  # fmt: skip
                self.lost.set()
                return

    async def step_down(self) -> None:
        """A clean stop, before the rest of the process stops: no new write, the writes in
        flight landed or cut off, then the Lease released (a standby takes it at once)."""
        await self.fence.close()
        await self.release()

    async def release(self) -> None:
        """Give the Lease up (a clean stop): a standby takes it at its next try."""
        self.released = True  # the keeper's next attempt must not take it back
        if not self.holds():
            return
        self.renewed_at = None  # no write from here on, whatever the answer
        await self.fence.close()  # a write in flight lands before the Lease goes
        with contextlib.suppress(*REQUEST_ERRORS):
            async with asyncio.timeout(self.retry_period):
                lease = await self.api.get(self.path)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") != self.identity:
                    return
                released = {**spec, "holderIdentity": None, "leaseDurationSeconds": 1,
                            "renewTime": _micro_time(self.wall())}  # fmt: skip
                await self.api.replace(self.path, {**lease, "spec": released})
                logger.info("lease %s released by %s", self.name, self.identity)


class WriteFence:
    """The time this replica may still start a write in (``window``), until closed; counts the
    writes in flight, so a stop can wait for them before it gives the Lease up."""

    def __init__(self, window: Callable[[], float]) -> None:
        self._window = window
        self._closed = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def window(self) -> float:
        return 0.0 if self._closed else self._window()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def close(self) -> None:
        """No write starts from now; returns once those in flight have ended (each is
        bounded by the window it started with)."""
        self._closed = True
        await self._idle.wait()


class FencedApi:
    """The reconciler's view of the API: reads pass; a write starts only while this replica
    leads, and is cut off (``NotLeader``) if it has not completed within the time it still
    leads, less ``SAFETY`` (a slow server or a full connection pool cannot carry a write past
    the fence). A replica that lost the Lease, or never had it, writes nothing."""

    def __init__(self, api: Api, fence: WriteFence) -> None:
        self.api = api
        self.fence = fence

    async def _fenced(
        self, what: str, path: str, write: Coroutine[Any, Any, JsonObject]
    ) -> JsonObject:
        window = self.fence.window()
        if window <= 0:
            write.close()  # never sent
            raise NotLeader(f"not the leader: {what} {path} refused")
        try:
            with self.fence.writing():
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
