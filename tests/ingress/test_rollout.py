"""A rollout fails no request: SIGTERM to one of two ingress replicas under a load of
keep-alive clients and new connections, behind a load balancer that, like kube-proxy, learns
of the pod's removal from its readiness a while later (here: it polls /readyz once a
second). The replica stops being ready at once, serves on for its shutdown delay (new
connections accepted, every response ``Connection: close``), then drains: the request in
flight completes, no request fails and no connection is reset."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from devcluster.pki import TestPKI

from support.ingress_fixtures import Published
from support.ingresses import IngressProcess, StartIngress
from support.kube import wait_for

HOST = "www.example.test"
LB_POLL = 1.0
"""How late the load balancer sees a readiness change (kube-proxy is later still)."""
DELAY = 2.5
"""The terminating replica's shutdown delay: longer than the balancer's lag."""


@dataclass
class Balancer:
    """Picks a ready replica for each new connection, from /readyz polled every LB_POLL."""

    replicas: list[IngressProcess]
    ready: set[int] = field(default_factory=set)
    turn: int = 0

    async def poll(self) -> None:
        while True:
            for replica in self.replicas:
                got = await replica.get("/readyz")
                if got is not None and got[0] == 200:
                    self.ready.add(replica.https_port)
                else:
                    self.ready.discard(replica.https_port)
            await asyncio.sleep(LB_POLL)

    def pick(self) -> int:
        ports = sorted(self.ready)
        self.turn += 1
        return ports[self.turn % len(ports)]


@dataclass
class Load:
    ok: Counter[int] = field(default_factory=Counter)
    """Responses with status 200, by replica port."""
    after_sigterm: Counter[int] = field(default_factory=Counter)
    """Connections opened after the SIGTERM, by replica port."""
    failures: list[str] = field(default_factory=list)
    resets: int = 0
    sigterm_at: float | None = None


async def _get(session: aiohttp.ClientSession, port: int, path: str, load: Load) -> bool:
    """One GET; whether the server asked to close the connection (or it failed)."""
    try:
        async with session.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"Host": HOST},
            server_hostname=HOST,
            timeout=aiohttp.ClientTimeout(total=15),
        ) as resp:
            await resp.read()
            if resp.status != 200:
                load.failures.append(f"{port}{path}: HTTP {resp.status}")
            else:
                load.ok[port] += 1
            return resp.headers.get("Connection", "").lower() == "close"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, ConnectionResetError) or "reset" in str(exc).lower():
            load.resets += 1
        load.failures.append(f"{port}{path}: {exc!r}")
        return True


async def _keep_alive_client(
    lb: Balancer, tls: ssl.SSLContext, load: Load, stop: asyncio.Event
) -> None:
    """One pooled connection, reused until the server closes it, then a new one via the
    balancer (as a browser stays on the pod its connection reached)."""
    connector = aiohttp.TCPConnector(ssl=tls, limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        port = lb.pick()
        while not stop.is_set():
            if await _get(session, port, "/", load):
                port = lb.pick()
                _count_new(load, port)
            await asyncio.sleep(0.01)


async def _new_connections(
    lb: Balancer, tls: ssl.SSLContext, load: Load, stop: asyncio.Event
) -> None:
    connector = aiohttp.TCPConnector(ssl=tls, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while not stop.is_set():
            port = lb.pick()
            _count_new(load, port)
            await _get(session, port, "/", load)
            await asyncio.sleep(0.02)


def _count_new(load: Load, port: int) -> None:
    if load.sigterm_at is not None:
        load.after_sigterm[port] += 1


async def test_sigterm_under_load_fails_no_request_and_resets_no_connection(
    pki: TestPKI, start: StartIngress, published: Published
) -> None:
    await published(HOST, "www-tls")
    leaving = await start(shutdown_delay_seconds=str(DELAY))
    staying = await start()
    lb = Balancer([leaving, staying])
    poller = asyncio.create_task(lb.poll())
    tls = ssl.create_default_context(cafile=str(pki.path("root")))
    load, stop = Load(), asyncio.Event()

    async def both_ready() -> bool | None:
        return len(lb.ready) == 2 or None

    await wait_for(both_ready, what="the balancer to see both replicas ready")
    clients = [asyncio.create_task(_keep_alive_client(lb, tls, load, stop)) for _ in range(4)]
    clients += [asyncio.create_task(_new_connections(lb, tls, load, stop)) for _ in range(2)]
    try:

        async def both_serving() -> bool | None:
            return all(load.ok[r.https_port] > 20 for r in lb.replicas) or None

        await wait_for(both_serving, what="load on both replicas")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as slow_session:
            in_flight = asyncio.create_task(
                _get(slow_session, leaving.https_port, "/slow?s=3", load)
            )
            await asyncio.sleep(0.5)  # the slow request has reached the backend
            load.sigterm_at = asyncio.get_running_loop().time()
            leaving.proc.send_signal(signal.SIGTERM)

            async def exited() -> bool | None:
                return leaving.proc.poll() is not None or None

            await wait_for(exited, timeout=DELAY + 25, what="the replica to drain and exit")
            await in_flight
        assert leaving.proc.returncode == 0
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        poller.cancel()
        for task in [*clients, poller]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
    assert load.resets == 0
    # The slow request (the only /slow one) completed on the leaving replica...
    assert load.ok[leaving.https_port] > 0
    # ...and the balancer's lag sent it new connections after the SIGTERM: the shutdown
    # delay is what served them.
    assert load.after_sigterm[leaving.https_port] > 0, dict(load.after_sigterm)
    assert load.ok[staying.https_port] > 0
