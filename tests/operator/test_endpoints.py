"""The operator process's own /healthz, /readyz and /metrics (no cluster: what they answer is
decided by the phase alone): alive by the phase's rule, ready as alive, and the leader gauge
scraped from a standby too."""

from __future__ import annotations

import aiohttp
from devcluster.responder import free_port

from ocsp_stapler.controller.endpoints import Phase, endpoints
from ocsp_stapler.controller.metrics import Metrics


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def test_health_follows_the_phase_and_metrics_share_or_split_ports() -> None:
    metrics, phase = Metrics(), Phase()
    health_port, metrics_port = free_port(), free_port()
    alive = [True]
    async with endpoints(metrics, phase, metrics_port=metrics_port, health_port=health_port):
        phase.enter("standby", lambda: alive[0])
        assert await _get(f"http://127.0.0.1:{health_port}/healthz") == (200, "ok: standby")
        assert await _get(f"http://127.0.0.1:{health_port}/readyz") == (200, "ok: standby")
        status, text = await _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "\nocsp_stapler_leader 0.0\n" in text
        alive[0] = False  # the election loop stopped finishing attempts
        assert (await _get(f"http://127.0.0.1:{health_port}/healthz"))[0] == 500
        phase.enter("leading", lambda: True)
        metrics.leader.set(1)
        assert await _get(f"http://127.0.0.1:{health_port}/healthz") == (200, "ok: leading")
        assert (
            "\nocsp_stapler_leader 1.0\n"
            in (await _get(f"http://127.0.0.1:{metrics_port}/metrics"))[1]
        )
        assert (await _get(f"http://127.0.0.1:{metrics_port}/healthz"))[0] == 404

    one = free_port()
    async with endpoints(metrics, phase, metrics_port=one, health_port=one):
        assert (await _get(f"http://127.0.0.1:{one}/healthz"))[0] == 200
        assert (await _get(f"http://127.0.0.1:{one}/metrics"))[0] == 200
