"""The sidecar's (and host mode's) /healthz, /readyz and /metrics, like the operator's.

| metric | type | labels |
|---|---|---|
| ocsp_stapler_sync_handovers_total | counter | result: ok, failed |
| ocsp_stapler_sync_stapling | gauge | 1 while consumers hold a valid staple |
| ocsp_stapler_sync_staple_expiry_timestamp_seconds | gauge | nextUpdate of that staple |
| ocsp_stapler_sync_staple_this_update_timestamp_seconds | gauge | its thisUpdate |
| ocsp_stapler_sync_rejected_total | counter | staples found but not handed over |
| ocsp_stapler_sync_looks_total | counter | looks at a changed source (or a due expiry, retry) |

``/healthz`` fails once the loop has not come round for ``stale_after`` seconds (a stuck
consumer command is bounded, so this means a hung process: restart it). ``/readyz`` is 200
once consumers were told something (a staple, or that there is none): a pod's startup or
readiness probe, so nginx or HAProxy start with the staple file already in place.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from ocsp_stapler.net.probes import serving
from ocsp_stapler.ocsp.responses import Staple


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.handovers = Counter("ocsp_stapler_sync_handovers", "Hand-overs to the consumers.",
                                 ["result"], registry=self.registry)  # fmt: skip
        self.stapling = Gauge("ocsp_stapler_sync_stapling", "1 while consumers hold a staple.",
                              registry=self.registry)  # fmt: skip
        self.expiry = Gauge("ocsp_stapler_sync_staple_expiry_timestamp_seconds",
                            "nextUpdate of the staple handed over, Unix time.",
                            registry=self.registry)  # fmt: skip
        self.this_update = Gauge("ocsp_stapler_sync_staple_this_update_timestamp_seconds",
                                 "thisUpdate of the staple handed over, Unix time.",
                                 registry=self.registry)  # fmt: skip
        self.rejected = Counter("ocsp_stapler_sync_rejected",
                                "Staples found but not handed over (invalid, foreign, expired).",
                                registry=self.registry)  # fmt: skip
        self.looks = Counter("ocsp_stapler_sync_looks", "Looks at a changed source, a due expiry "
                             "or a retry.", registry=self.registry)  # fmt: skip
        self.told = False
        self.beat = time.monotonic()

    def handed(self, staple: Staple | None) -> None:
        self.handovers.labels(result="ok").inc()
        self.told = True
        self.stapling.set(1 if staple is not None else 0)
        self.expiry.set(staple.expires_at.timestamp() if staple is not None else 0)
        self.this_update.set(staple.this_update.timestamp() if staple is not None else 0)

    def failed(self) -> None:
        self.handovers.labels(result="failed").inc()
        self.told = False


@contextlib.asynccontextmanager
async def health_server(
    metrics: SyncMetrics, *, address: str, port: int, stale_after: float
) -> AsyncIterator[None]:
    async def healthz(_r: web.Request) -> web.Response:
        age = time.monotonic() - metrics.beat
        if age > stale_after:
            return web.Response(text=f"the loop is stuck ({age:.0f} s)", status=500)
        return web.Response(text="ok")

    async def readyz(_r: web.Request) -> web.Response:
        if metrics.told:
            return web.Response(text="ready")
        return web.Response(text="consumers not told yet", status=503)

    async def serve(_r: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})  # fmt: skip

    routes = {(port, "/healthz"): healthz, (port, "/readyz"): readyz, (port, "/metrics"): serve}
    async with serving(routes, address=address):
        yield
