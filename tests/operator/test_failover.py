"""Two `ocsp-stapler operator` processes electing a leader on the real Lease API, with the
chart's default timings (lease 15 s, renew deadline 10 s, retry 2 s), measured:

* a standby answers /healthz (a kubelet must not restart it) and reports leader 0;
* SIGKILL of the leader: the standby takes over within the lease plus one retry period;
* SIGTERM of the leader: it closes its fence, lets the writes in flight land, releases the
  Lease and only then shuts kopf down; the standby, watching the Lease, takes over at once;
* after either takeover, a Secret with a fresh staple costs 0 OCSP requests and 0 writes;
* a leader frozen mid-fetch (SIGSTOP: no renewals, like a partition or a long pause) and
  thawed after the takeover writes nothing: its fence closed on its own monotonic clock, its
  write is refused, and it exits 1.

The figures print (pytest -s) and are what the README's HA section quotes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from devcluster.controlplane import ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.names import LEASE_NAME
from support.kube import SecretHistory, lease_holder, secret_path, wait_for
from support.operator_processes import OperatorProcess, spawn_operator
from support.responders import ScriptedServer
from support.staples import ENABLED, create_secret, staple_of, stapled_secret

LEASE, RETRY = 15.0, 2.0
"""The chart's defaults, which the operator's defaults are."""


def _replica(
    cluster: ControlPlane, namespace: str, tmp_path: Path, name: str, **env: str
) -> OperatorProcess:
    return spawn_operator(cluster, namespace, tmp_path / f"{name}.log", leader_election="true",
                          leader_election_namespace=namespace,
                          leader_election_identity=name, **env)  # fmt: skip


async def _until_holder(api: ApiClient, namespace: str, name: str, timeout: float) -> float:
    """Seconds until ``name`` holds the Lease."""
    started = time.monotonic()

    async def holds() -> bool | None:
        return (await lease_holder(api, namespace, LEASE_NAME)) == name or None

    await wait_for(holds, timeout=timeout, what=f"{name} to hold the lease")
    return time.monotonic() - started


async def _leading(replica: OperatorProcess) -> None:
    async def leading() -> bool | None:
        health = await replica.health()
        return (
            health == (200, "ok: leading") and await replica.metric("ocsp_stapler_leader") == 1
        ) or None

    await wait_for(leading, timeout=30, what="the replica to lead")


async def _adopted(replica: OperatorProcess, secrets: int) -> None:
    """Until the replica has judged ``secrets`` opted-in Secrets (they are its managed ones)."""

    async def judged() -> bool | None:
        return await replica.metric("ocsp_stapler_managed_secrets") == secrets or None

    await wait_for(judged, timeout=30, what="the new leader to judge the Secrets")


async def test_takeover_after_sigkill_and_sigterm(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    cluster: ControlPlane, crd: None, tmp_path: Path,
) -> None:  # fmt: skip
    a = _replica(cluster, namespace, tmp_path, "a")
    b: OperatorProcess | None = None
    c: OperatorProcess | None = None
    try:
        await _until_holder(api, namespace, "a", timeout=30)
        await _leading(a)
        b = _replica(cluster, namespace, tmp_path, "b")
        await wait_for(b.health, timeout=30, what="the standby's /healthz")
        assert await b.health() == (200, "ok: standby")
        assert await b.metric("ocsp_stapler_leader") == 0
        await stapled_secret(api, namespace, "fresh", pki, responder.url)
        version = (await api.get(secret_path(namespace, "fresh")))["metadata"]["resourceVersion"]
        asked = responder.request_count()

        a.send(signal.SIGKILL)
        killed = await _until_holder(api, namespace, "b", timeout=LEASE + RETRY + 10)
        await _leading(b)
        await _adopted(b, 1)
        print(f"\nSIGKILL: the standby held the lease {killed:.1f} s after the kill")
        assert killed <= LEASE + RETRY + 1.5

        c = _replica(cluster, namespace, tmp_path, "c")
        await wait_for(c.health, timeout=30, what="the new standby's /healthz")
        b.send(signal.SIGTERM)
        termed = await _until_holder(api, namespace, "c", timeout=LEASE + RETRY + 10)
        assert await b.exit_code() == 0
        await _leading(c)
        await _adopted(c, 1)
        print(f"SIGTERM: the standby held the lease {termed:.1f} s after the signal")
        assert termed <= 1.5  # handed over first (then b shut down), the standby watching

        # Both takeovers adopted the fresh staple: no OCSP request, no write.
        assert responder.request_count() == asked
        assert (await api.get(secret_path(namespace, "fresh")))["metadata"][
            "resourceVersion"
        ] == version
    finally:
        for replica in (a, b, c):
            if replica is not None:
                replica.stop()


def _holds_first_request(
    url: str, held: asyncio.Event, gate: asyncio.Event
) -> Callable[..., object]:
    """The first OCSP request waits for ``gate`` (``held`` is set once it is waiting); every
    later one goes straight on to the real responder at ``url``."""
    first = True

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal first
        if first:
            first = False
            held.set()
            await gate.wait()
        raise web.HTTPTemporaryRedirect(url + request.path_qs)

    return handler


async def test_a_frozen_leader_thawed_after_the_takeover_writes_nothing(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    cluster: ControlPlane, crd: None, tmp_path: Path, scripted: ScriptedServer,
) -> None:  # fmt: skip
    held, gate = asyncio.Event(), asyncio.Event()
    scripted.handler = _holds_first_request(responder.url, held, gate)  # type: ignore[assignment]
    # Its fetch must outlive the freeze (timers fire at once on a thaw), so that it wakes
    # with a response to write, which is what the fence is for.
    a = _replica(cluster, namespace, tmp_path, "a", fetch_timeout_seconds="120",
                 attempt_timeout_seconds="120")  # fmt: skip
    b: OperatorProcess | None = None
    try:
        await _until_holder(api, namespace, "a", timeout=30)
        await _leading(a)
        b = _replica(cluster, namespace, tmp_path, "b")
        await wait_for(b.health, timeout=30, what="the standby's /healthz")
        async with SecretHistory(api, namespace) as history:
            leaf = pki.leaf(ocsp_urls=[scripted.url])
            await create_secret(api, namespace, "contested", pki, leaf, annotations=ENABLED)
            await asyncio.wait_for(held.wait(), 30)  # a's fetch is in flight, held
            a.send(signal.SIGSTOP)  # frozen: no renewal, its fetch half done
            frozen = time.monotonic()
            await _until_holder(api, namespace, "b", timeout=LEASE + RETRY + 10)
            first = await wait_for(lambda: staple_of(api, namespace, "contested"), timeout=30,
                                   what="the new leader's staple")  # fmt: skip
            gate.set()  # a's held request is answered now...
            a.send(signal.SIGCONT)  # ...and a wakes up with a verified response in hand
            print(f"\nSIGSTOP: a was frozen {time.monotonic() - frozen:.1f} s")
            assert await a.exit_code() == 1  # it lost the lease: exit, restart as a standby
        staples = {
            v["data"].get("tls.ocsp-staple") for v in history.of("contested") if v.get("data")
        } - {None}
        assert len(staples) == 1, "a second staple was written: the frozen leader wrote"
        assert await staple_of(api, namespace, "contested") == first
        log = a.log.read_text()
        assert "not the leader" in log or "cut off" in log, "the thawed leader never tried to write"
        assert "lost" in log
    finally:
        for replica in (a, b):
            if replica is not None:
                replica.stop()
