"""Name lookups: a namespace whose names never resolve cannot take the threads of the others.

A lookup cannot be cancelled, so these tests give the fetcher a lookup function (the one
fault no real resolver here produces on demand: a name whose servers never answer) that
blocks until the test lets it go, and resolve the healthy name to the scripted loopback
server, which then answers over real HTTP. The operator's scheduler names each worker's
namespace as the owner of its lookups; a scheduler test reads it back.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
from collections.abc import Hashable
from typing import Any

import pytest
from aiohttp import web

from ocsp_stapler.controller.scheduling import Scheduler
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.net.lookups import LOOKUP_OWNER, Lookups
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.transport import HttpRequest
from support.clocks import utcnow
from support.kube import wait_for
from support.responders import LOOPBACK_CIDRS, ScriptedServer


class Resolver:
    """``socket.getaddrinfo`` for the tests: ``*.hang.test`` blocks until released, other
    names are the loopback address."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = 0
        self.most_blocked = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: Any, *_: Any) -> list[tuple[Any, ...]]:
        if host.endswith(".hang.test"):
            with self._lock:
                self.blocked += 1
                self.most_blocked = max(self.most_blocked, self.blocked)
            try:
                self.release.wait(timeout=60)
            finally:
                with self._lock:
                    self.blocked -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port or 80)))]


async def fetch_as(owner: str, fetch: HttpFetcher, url: str) -> Any:
    LOOKUP_OWNER.set(owner)  # in this task's own context, as the scheduler does per worker
    return await fetch(HttpRequest(method="GET", url=url, headers=(), body=None))


async def test_hanging_lookups_of_one_namespace_leave_threads_for_the_others(
    scripted: ScriptedServer,
) -> None:
    async def ok(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"fine", content_type="application/ocsp-response")

    scripted.handler = ok
    resolver = Resolver()
    lookups = Lookups(threads=4, per_owner=2, lookup=resolver)
    settings = FetchSettings(
        total_timeout=0.3, guard=DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)
    )
    try:
        async with HttpFetcher(settings, lookups=lookups) as fetch:
            # One namespace's certificates name hosts whose resolver never answers, over
            # and over (each attempt's deadline ends its wait, not its thread).
            for round_ in range(3):
                outcomes = await asyncio.gather(
                    *(
                        fetch_as("hostile", fetch, f"http://r{round_}n{i}.hang.test/")
                        for i in range(6)
                    ),
                    return_exceptions=True,
                )
                assert all(isinstance(o, errors.FetchFailed) for o in outcomes), outcomes
                refused = [o for o in outcomes if "still in progress" in str(o)]
                assert len(refused) >= 4, outcomes  # beyond its 2 threads: at once, retryable
                assert all(o.retryable for o in refused)
            assert resolver.most_blocked == 2
            assert lookups.in_flight["hostile"] == 2
            # Another namespace still resolves, connects and gets its answer.
            got = await fetch_as("tenant", fetch, f"http://ok.test:{scripted.port}/")
            assert got.status == 200
            assert got.body == b"fine"
    finally:
        resolver.release.set()

    async def drained() -> bool | None:
        return not lookups.in_flight or None

    await wait_for(drained, what="the threads back")
    lookups.close()


async def test_a_failed_lookup_is_a_verdict() -> None:
    resolver = Resolver()
    resolver.release.set()  # answers at once: the name does not resolve
    async with HttpFetcher(
        FetchSettings(guard=DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)),
        lookups=Lookups(lookup=resolver),
    ) as fetch:
        with pytest.raises(errors.FetchFailed, match="resolve"):
            await fetch_as("a", fetch, "http://nowhere.hang.test/")


async def test_the_scheduler_names_each_workers_namespace_as_the_lookup_owner() -> None:
    seen: dict[str, Hashable] = {}

    async def work(key: str) -> None:
        seen[key] = LOOKUP_OWNER.get()

    scheduler: Scheduler[str] = Scheduler(
        work=work, clock=utcnow, concurrency=2, group=lambda k: k.split("/", 1)[0]
    )
    runner = asyncio.create_task(scheduler.run())
    now = utcnow() - datetime.timedelta(seconds=1)
    for key in ("a/one", "b/two", "a/three"):
        scheduler.schedule(key, now)

    async def ran() -> bool | None:
        return len(seen) == 3 or None

    await wait_for(ran, what="three runs")
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert seen == {"a/one": "a", "b/two": "b", "a/three": "a"}
    assert LOOKUP_OWNER.get() is None  # the test's own context is untouched


async def test_a_lookup_after_close_is_a_verdict_and_holds_nothing() -> None:
    lookups = Lookups(lookup=Resolver())
    lookups.close()
    LOOKUP_OWNER.set("a")
    with pytest.raises(errors.FetchFailed, match="shutting down"):
        await lookups.getaddrinfo("ok.test", 80)
    assert not lookups.in_flight
