"""Refreshes a CA can live with: no re-fetch loop on the same response, HTTP caching honoured.

CAs pre-generate responses and put a CDN in front: past a response's refresh point the CDN
keeps handing back the same bytes for hours. A loopback "CDN" here asks the real `openssl
ocsp` responder once and then serves that same response to every request, with the
``Cache-Control`` a test gives it; the operator runs against the real control plane on a fake
clock, and the CDN counts what it is asked.
"""

from __future__ import annotations

import dataclasses
import datetime

import aiohttp
from aiohttp import web
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, tells_more, verify_response
from support.clocks import FakeClock
from support.kube import wait_for
from support.operators import StartOperator
from support.responders import Handler, ScriptedServer
from support.staples import ENABLED, create_secret, staple_of


def cdn(origin: str, *, cache_control: str | None = None) -> Handler:
    """Fetch from ``origin`` once, then answer every request with that same response."""
    kept: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if not kept:
            async with aiohttp.ClientSession() as session:
                if request.method == "POST":
                    headers = {"Content-Type": "application/ocsp-request"}
                    call = session.post(origin, data=await request.read(), headers=headers)
                else:
                    call = session.get(origin + request.path_qs)
                async with call as resp:
                    kept.append(await resp.read())
        headers = {"Cache-Control": cache_control} if cache_control else {}
        return web.Response(body=kept[0], content_type="application/ocsp-response", headers=headers)

    return handler


async def test_the_same_response_is_not_fetched_again_within_minutes(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    scripted: ScriptedServer,
    start_operator: StartOperator,
) -> None:
    with OpenSSLResponder(pki, validity_minutes=240) as origin:  # refresh point: 2 h in
        scripted.handler = cdn(origin.url)
        clock = FakeClock()
        op = await start_operator(clock=clock)
        leaf = pki.leaf(ocsp_urls=[scripted.url])
        await create_secret(api, namespace, "cdn", pki, leaf, annotations=ENABLED)
        first = await wait_for(lambda: staple_of(api, namespace, "cdn"))
        assert len(scripted.requests) == 1

        # Past the refresh point (2 h, spread later by up to 10 % of the wait): asked, the
        # same comes back.
        await op.advance(minutes=133)
        assert len(scripted.requests) == 2
        for _ in range(8):  # it used to ask again every 30 s from here on
            await op.advance(minutes=1)
        assert len(scripted.requests) == 2
        await op.advance(minutes=4)  # 10-11 minutes after: once more, then 20-22 minutes
        assert len(scripted.requests) == 3
        await op.advance(minutes=15)
        assert len(scripted.requests) == 3
        await op.advance(minutes=8)
        assert len(scripted.requests) == 4
        assert await staple_of(api, namespace, "cdn") == first  # kept, valid, untouched


async def test_http_caching_is_the_earliest_refresh(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    scripted: ScriptedServer,
    start_operator: StartOperator,
) -> None:
    with OpenSSLResponder(pki, validity_minutes=240) as origin:
        scripted.handler = cdn(origin.url, cache_control="public, max-age=9000, no-transform")
        clock = FakeClock()
        op = await start_operator(clock=clock)
        leaf = pki.leaf(ocsp_urls=[scripted.url])
        await create_secret(api, namespace, "cdn", pki, leaf, annotations=ENABLED)
        await wait_for(lambda: staple_of(api, namespace, "cdn"))
        await op.advance(minutes=149)  # past the midpoint, but the CDN said 2.5 h
        assert len(scripted.requests) == 1
        await op.advance(minutes=17)  # then spread later by up to 10 % of the wait (15 min)
        assert len(scripted.requests) == 2


def test_a_revoked_answer_as_new_as_the_good_one_is_news(pki: TestPKI) -> None:
    """A CA that rounds thisUpdate signs the good and the revoked answer within one second:
    the revoked one must replace the shared good one, not count as "the same again"."""
    leaf = pki.leaf()
    at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    good = verify_response(
        pki.response(leaf, this_update=at, next_update=at + datetime.timedelta(hours=4)),
        cert_id=CertID.of(leaf.cert, pki.intermediate.cert),
        issuer=pki.intermediate.cert,
        now=at,
    )
    revoked = dataclasses.replace(good, status=CertStatus.REVOKED)
    later = dataclasses.replace(good, this_update=at + datetime.timedelta(seconds=1))
    assert tells_more(revoked, good)
    assert not tells_more(good, revoked)
    assert not tells_more(good, good)
    assert tells_more(later, revoked)
    assert not tells_more(revoked, later)
