"""Starting the operator: API client, fetcher, reconciler, scheduler, metrics, then kopf.

``run_operator`` is what ``ocsp-stapler operator`` runs, and what tests run in-process with a
fake clock. kopf is configured so that it leaves no trace on Secrets (see ``handlers``),
watches only ``type=kubernetes.io/tls`` Secrets (server-side), runs standalone (a Lease, not
kopf's peering, decides which replica works: ``k8s.leases``), posts no Events of its own and
serves no liveness endpoint (the process serves its own for every phase: ``endpoints``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import kopf

from ocsp_stapler.controller.endpoints import Phase, endpoints
from ocsp_stapler.controller.eventing import EventRecorder
from ocsp_stapler.controller.handlers import build_registry
from ocsp_stapler.controller.instance import OperatorInstance
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import Api, ApiClient, Credentials
from ocsp_stapler.k8s.leases import FencedApi, LeaderElector, WriteFence
from ocsp_stapler.names import LEASE_NAME, TLS_SECRET_TYPE
from ocsp_stapler.net.fetching import HttpFetcher

logger = logging.getLogger(__name__)

Flag = asyncio.Event | threading.Event | asyncio.Future[None]
"""What kopf takes as a stop or ready flag."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.watching.field_selectors["secrets"] = f"type={TLS_SECRET_TYPE}"
    ks.peering.standalone = True
    ks.posting.enabled = False
    ks.scanning.disabled = True
    ks.networking.request_timeout = 60
    # List in pages: at 10,000 Secrets one whole list is a memory spike of its own.
    ks.watching.chunk_size = 500
    # Per-Secret kopf workers only forward events to the reconciler: let them go quickly, so
    # that a SIGTERM (a rolling update) ends the process in about a second.
    ks.queueing.idle_timeout = 1.0
    ks.queueing.exit_timeout = 0.5
    return ks


@contextlib.asynccontextmanager
async def reconciler_running(
    settings: OperatorSettings,
    *,
    credentials: Credentials,
    clock: Callable[[], datetime.datetime] = utcnow,
    metrics: Metrics,
    fence: WriteFence | None = None,
) -> AsyncIterator[OperatorInstance]:
    """The reconciler with its clients and scheduler running (kopf not yet started);
    ``fence``: what every write goes through while this replica leads (leader election)."""
    async with (
        ApiClient(credentials, user_agent="ocsp-stapler-operator") as client,
        HttpFetcher(settings.fetch_settings()) as fetch,
    ):
        api: Api = client if fence is None else FencedApi(client, fence)
        reconciler = Reconciler(
            api=api,
            fetch=fetch,
            settings=settings,
            clock=clock,
            metrics=metrics,
            events=EventRecorder(api, clock),
        )
        scheduler = asyncio.create_task(reconciler.scheduler.run(), name="ocsp-stapler-scheduler")
        instance = OperatorInstance(
            reconciler=reconciler, credentials=credentials, background=[scheduler]
        )
        try:
            yield instance
        finally:
            await instance.stop()


def _identity(settings: OperatorSettings) -> str:
    return settings.leader_election_identity or f"{socket.gethostname()}-{os.getpid()}"


class LeadershipLost(Exception):
    """The Lease was lost while leading. The process exits non-zero, as client-go's leader
    election does: the restart begins clean, as a standby."""


async def run_operator(
    settings: OperatorSettings,
    *,
    credentials: Credentials,
    clock: Callable[[], datetime.datetime] = utcnow,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    instance_ready: Callable[[OperatorInstance], None] | None = None,
) -> None:
    """The operator until stopped; with leader election, a standby until it holds the Lease,
    then the operator until it stops (the Lease released) or loses it (``LeadershipLost``,
    having written nothing since its renew deadline). /healthz and /metrics are served all
    along, standby included."""
    metrics, phase = Metrics(), Phase()
    work = _Work(settings, credentials, clock, ready_flag, instance_ready, metrics, phase)
    async with endpoints(metrics, phase, metrics_port=settings.metrics_port,
                         health_port=settings.health_port):  # fmt: skip
        if settings.leader_election:
            await _elect_then_operate(work, stop_flag)
        else:
            await work.operate(stop_flag, "operating")


async def _elect_then_operate(work: _Work, stop_flag: Flag | None) -> None:
    settings = work.settings
    own_stop = asyncio.Event()

    def own_signals() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, own_stop.set)

    own_signals()

    def stopped() -> bool:
        return own_stop.is_set() or (stop_flag is not None and _is_set(stop_flag))

    async with ApiClient(work.credentials, user_agent="ocsp-stapler-leader-election") as api:
        elector = LeaderElector(
            api,
            namespace=settings.leader_election_namespace,
            name=LEASE_NAME,
            identity=_identity(settings),
            lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_period_seconds,
        )
        logger.info("standby as %s: waiting for the lease %s/%s", elector.identity,
                    settings.leader_election_namespace, LEASE_NAME)  # fmt: skip
        stall = STALLED_AFTER_LEASES * settings.lease_duration_seconds
        work.phase.enter("standby", lambda: elector.monotonic() - elector.attempted_at < stall)
        if not await elector.acquire(stopped) or stopped():
            await elector.release()  # a stop that came while the last attempt won
            return
        keeper = asyncio.create_task(elector.keep(), name="ocsp-stapler-lease")
        lost = asyncio.Event()
        keeper.add_done_callback(lambda _t: lost.set())
        stopping = asyncio.create_task(_either(own_stop, lost, stop_flag))
        # A clean stop hands over first, then kopf and the reconciler wind down, fenced off:
        # the standby need not wait for this process's shutdown.
        stepping_down = asyncio.create_task(_step_down_when_stopped(elector, work, stopping))
        try:
            await work.operate(stopping, "leading", fence=elector.fence, signals=own_signals,
                               also_alive=lambda: not keeper.done())  # fmt: skip
        finally:
            keeper.cancel()
            stopping.cancel()
            await stepping_down
            await elector.release()
        if elector.lost.is_set() and not stopped():
            raise LeadershipLost(f"lease {LEASE_NAME} lost by {elector.identity}")


async def _step_down_when_stopped(
    elector: LeaderElector, work: _Work, stopping: asyncio.Task[None]
) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(stopping)
    if elector.lost.is_set():
        return  # nothing to hand over: the fence is closed already
    work.metrics.leader.set(0)
    work.phase.enter("stopping", lambda: True)
    await elector.step_down()


STALLED_AFTER_LEASES = 3
"""A standby whose election loop has not finished an attempt for this many lease durations is
hung (each attempt is bounded well below one): /healthz fails and the kubelet restarts it."""


def _is_set(flag: Flag) -> bool:
    if isinstance(flag, asyncio.Future):
        return flag.done()
    return flag.is_set()


async def _either(own: asyncio.Event, lost: asyncio.Event, outer: Flag | None) -> None:
    """Done when any of the stop conditions is (kopf stops on a done future)."""
    # Polled: the outer flag may be a threading.Event (tests), which cannot be awaited.
    while not (own.is_set() or lost.is_set() or (outer is not None and _is_set(outer))):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


@dataclass
class _Work:
    """Everything the working phase needs, whether it is entered at once or after election."""

    settings: OperatorSettings
    credentials: Credentials
    clock: Callable[[], datetime.datetime]
    ready_flag: Flag | None
    instance_ready: Callable[[OperatorInstance], None] | None
    metrics: Metrics
    phase: Phase

    async def operate(
        self,
        stop_flag: Flag | asyncio.Task[None] | None,
        phase: str,
        *,
        fence: WriteFence | None = None,
        signals: Callable[[], None] | None = None,
        also_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        """kopf and the reconciler until ``stop_flag``; ``signals`` takes SIGTERM and SIGINT
        back from kopf once it has set its own handlers (a leader hands over first)."""
        settings = self.settings
        async with reconciler_running(settings, credentials=self.credentials, clock=self.clock,
                                      metrics=self.metrics, fence=fence) as instance:  # fmt: skip
            if self.instance_ready is not None:
                self.instance_ready(instance)
            self.phase.enter(phase, lambda: instance.running() and also_alive())
            self.metrics.leader.set(1)
            logger.info(
                "ocsp-stapler operator starting: namespaces=%s staple key=%s",
                ",".join(settings.namespaces) or "(all)",
                settings.staple_key,
            )
            try:
                existing = set(asyncio.all_tasks())
                tasks = await kopf.spawn_tasks(
                    registry=build_registry(),
                    settings=kopf_settings(settings),
                    memo=kopf.Memo(operator=instance),
                    clusterwide=not settings.namespaces,
                    namespaces=list(settings.namespaces),
                    standalone=True,
                    stop_flag=stop_flag,
                    ready_flag=self.ready_flag,
                )
                if signals is not None:
                    signals()
                await kopf.run_tasks(tasks, ignored=existing)
            finally:
                self.metrics.leader.set(0)
                self.phase.enter("stopping", lambda: True)
