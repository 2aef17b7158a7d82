"""Starting the operator: API client, fetcher, reconciler, scheduler, metrics, then kopf.

``run_operator`` is what ``ocsp-stapler operator`` runs, and what tests run in-process with a
fake clock. kopf is configured so that it leaves no trace on Secrets (see ``handlers``),
watches only ``type=kubernetes.io/tls`` Secrets (server-side), runs standalone (one replica
needs no peering objects) and posts no Events of its own.
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

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ocsp_stapler.controller.eventing import EventRecorder
from ocsp_stapler.controller.handlers import build_registry
from ocsp_stapler.controller.instance import OperatorInstance
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import Api, ApiClient, Credentials
from ocsp_stapler.k8s.leases import FencedApi, LeaderElector
from ocsp_stapler.names import TLS_SECRET_TYPE
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
async def metrics_server(metrics: Metrics, port: int) -> AsyncIterator[None]:
    if port <= 0:
        yield
        return

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (scraped from the pod network)
    try:
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def reconciler_running(
    settings: OperatorSettings,
    *,
    credentials: Credentials,
    clock: Callable[[], datetime.datetime] = utcnow,
    metrics: Metrics | None = None,
    fence: Callable[[], float] | None = None,
) -> AsyncIterator[OperatorInstance]:
    """The reconciler with its clients and scheduler running (kopf not yet started);
    ``fence``: the seconds a write may take and land while this replica leads."""
    metrics = metrics or Metrics()
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
            async with metrics_server(metrics, settings.metrics_port):
                yield instance
        finally:
            await instance.stop()


LEASE_NAME = "ocsp-stapler-operator"


def _identity(settings: OperatorSettings) -> str:
    return settings.leader_election_identity or f"{socket.gethostname()}-{os.getpid()}"


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
    then the operator until it stops (the Lease released) or loses it (it returns at once,
    having written nothing since its renew deadline)."""
    if not settings.leader_election:
        await _operate(settings, credentials=credentials, clock=clock, stop_flag=stop_flag,
                       ready_flag=ready_flag, instance_ready=instance_ready)  # fmt: skip
        return
    own_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, own_stop.set)

    def stopped() -> bool:
        return own_stop.is_set() or (stop_flag is not None and _is_set(stop_flag))

    async with ApiClient(credentials, user_agent="ocsp-stapler-leader-election") as api:
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
        if not await elector.acquire(stopped) or stopped():
            await elector.release()  # a stop that came while the last attempt won
            return
        with contextlib.suppress(NotImplementedError, RuntimeError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)  # kopf takes the signals from here on
        keeper = asyncio.create_task(elector.keep(), name="ocsp-stapler-lease")
        lost = asyncio.Event()
        keeper.add_done_callback(lambda _t: lost.set())
        stopping = asyncio.create_task(_either(own_stop, lost, stop_flag))
        try:
            await _operate(settings, credentials=credentials, clock=clock, stop_flag=stopping,
                           ready_flag=ready_flag, instance_ready=instance_ready,
                           fence=elector.write_window)  # fmt: skip
        finally:
            keeper.cancel()
            stopping.cancel()
            await elector.release()


def _is_set(flag: Flag) -> bool:
    if isinstance(flag, asyncio.Future):
        return flag.done()
    return flag.is_set()


async def _either(own: asyncio.Event, lost: asyncio.Event, outer: Flag | None) -> None:
    """Done when any of the stop conditions is (kopf stops on a done future)."""
    # Polled: the outer flag may be a threading.Event (tests), which cannot be awaited.
    while not (own.is_set() or lost.is_set() or (outer is not None and _is_set(outer))):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def _operate(
    settings: OperatorSettings,
    *,
    credentials: Credentials,
    clock: Callable[[], datetime.datetime],
    stop_flag: Flag | asyncio.Task[None] | None,
    ready_flag: Flag | None,
    instance_ready: Callable[[OperatorInstance], None] | None,
    fence: Callable[[], float] | None = None,
) -> None:
    async with reconciler_running(settings, credentials=credentials, clock=clock,
                                  fence=fence) as instance:  # fmt: skip
        if instance_ready is not None:
            instance_ready(instance)
        liveness = (
            f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port > 0 else None
        )
        logger.info(
            "ocsp-stapler operator starting: namespaces=%s staple key=%s",
            ",".join(settings.namespaces) or "(all)",
            settings.staple_key,
        )
        await kopf.operator(
            registry=build_registry(),
            settings=kopf_settings(settings),
            memo=kopf.Memo(operator=instance),
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=True,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
