"""Identical certificates in many Secrets cost one OCSP request."""

from __future__ import annotations

import asyncio

import pytest
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.sharing import SingleFlight
from ocsp_stapler.ocsp.stapling import Fetched, obtain_staple
from support.clocks import utcnow


async def test_fifty_holders_of_one_certificate_send_one_request(
    ec_pki: TestPKI, fetch: HttpFetcher
) -> None:
    with OpenSSLResponder(ec_pki) as responder:
        leaf = ec_pki.leaf(ocsp_urls=[responder.url])
        chains = [assemble_chain(ec_pki.chain_pem(leaf)) for _ in range(50)]  # 50 Secrets
        flight: SingleFlight[int, Fetched] = SingleFlight()

        async def one(chain_index: int) -> Fetched:
            chain = chains[chain_index]
            return await flight.run(
                chain.leaf.serial_number, lambda: obtain_staple(chain, fetch=fetch, clock=utcnow)
            )

        results = await asyncio.gather(*(one(i) for i in range(50)))
        assert len({r.staple.der for r in results}) == 1
        assert responder.request_count() == 1
        assert not flight.in_flight(leaf.cert.serial_number)

        # Once done, the next ask is a new fetch (freshness is the caller's cache's business).
        await one(0)
        assert responder.request_count() == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 42

    first = asyncio.create_task(flight.run("k", work))
    second = asyncio.create_task(flight.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert await second == 42
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_errors_reach_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("responder exploded")

    results = await asyncio.gather(
        flight.run("k", boom), flight.run("k", boom), return_exceptions=True
    )
    assert [str(r) for r in results] == ["responder exploded"] * 2
