"""The operator process's /healthz, /readyz and /metrics, served from start to exit.

Not kopf's liveness endpoint: kopf serves it only while kopf runs, and with leader election
a standby runs no kopf at all, so a liveness probe would restart every standby in a loop, and
a standby would go unscraped (its ``ocsp_stapler_leader 0`` is what the no-leader alert reads).
So the process serves its own, and each phase says what "alive" means for it:

* standby: the election loop has finished an attempt recently (each attempt is bounded, so a
  silent loop is a hung process; an unreachable API server is not a reason to restart);
* leading (or running without election): the scheduler and the lease keeper are running.

``/readyz`` answers as ``/healthz``: a standby is ready (a PodDisruptionBudget counts it as
the spare it is, so a node drain may evict the leader once the standby is up).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.net.probes import serving


class Phase:
    """What the process is doing, and how to tell it is alive in that phase."""

    def __init__(self) -> None:
        self.name = "starting"
        self._alive: Callable[[], bool] = lambda: True

    def enter(self, name: str, alive: Callable[[], bool]) -> None:
        self.name, self._alive = name, alive

    def alive(self) -> bool:
        return self._alive()


@contextlib.asynccontextmanager
async def endpoints(
    metrics: Metrics, phase: Phase, *, metrics_port: int, health_port: int
) -> AsyncIterator[None]:
    async def health(_r: web.Request) -> web.Response:
        if phase.alive():
            return web.Response(text=f"ok: {phase.name}")
        return web.Response(text=f"not alive: {phase.name}", status=500)

    async def scrape(_r: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    routes = {
        (health_port, "/healthz"): health,
        (health_port, "/readyz"): health,
        (metrics_port, "/metrics"): scrape,
    }
    async with serving(routes):
        yield
