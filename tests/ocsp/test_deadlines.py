"""One attempt, one budget: a deadline for all its requests together, and a cap on its URLs.

The real fetcher against a scripted loopback server: the faults (hangs, refusals) are the
server's, the limits are the domain's. Without the budget a certificate with four hanging
caIssuers URLs and four hanging responders holds a worker for eight fetch timeouts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from devcluster.pki import Issued, TestPKI

from ocsp_stapler.config import ConfigError
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import Chain, assemble_chain
from ocsp_stapler.ocsp.stapling import MAX_ATTEMPT_URLS, Attempt, DeadlinePassed, obtain_staple
from ocsp_stapler.ocsp.transport import HttpRequest, HttpResponse
from support.clocks import utcnow
from support.responders import LOOPBACK_CIDRS, ScriptedServer, hang

GUARD = DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)


def hostile_leaf(pki: TestPKI, base: str) -> Issued:
    """A leaf whose every caIssuers and OCSP URL (four of each) points at ``base``."""
    return pki.leaf(
        ca_issuer_urls=[f"{base}/ca{i}" for i in range(4)],
        ocsp_urls=[f"{base}/ocsp{i}" for i in range(4)],
    )


def without_issuer(leaf: Issued) -> Chain:
    return assemble_chain(leaf.pem)  # tls.crt without the intermediate: caIssuers must be asked


def urls_asked(server: ScriptedServer) -> list[str]:
    """The URLs asked, in order, once each (a GET carries the request after the URL)."""
    seen: list[str] = []
    for _method, path in server.requests:
        url = "/" + path.split("/")[1]
        if url not in seen:
            seen.append(url)
    return seen


@pytest.fixture
async def patient_fetch() -> AsyncIterator[HttpFetcher]:
    """The fetcher with the operator's default per-request timeout (10 s)."""
    async with HttpFetcher(FetchSettings(guard=GUARD)) as fetch:
        yield fetch


async def test_hanging_urls_end_at_the_attempt_deadline(
    ec_pki: TestPKI, scripted: ScriptedServer, patient_fetch: HttpFetcher
) -> None:
    scripted.handler = hang
    leaf = hostile_leaf(ec_pki, scripted.url)
    started = time.monotonic()
    with pytest.raises(errors.FetchFailed) as caught:
        await obtain_staple(
            without_issuer(leaf), fetch=patient_fetch, clock=utcnow, attempt=Attempt(timeout=1.0)
        )
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0  # not the fetcher's 10 s, let alone eight times that
    assert caught.value.retryable
    assert type(caught.value) is errors.FetchFailed  # not IssuerNotFound: it may work later
    assert "1 s limit" in caught.value.message
    assert f"{scripted.url}/ca0" in caught.value.message  # what was tried
    assert urls_asked(scripted) == ["/ca0"]  # the first download took the whole attempt


async def test_hanging_responders_end_at_the_attempt_deadline(
    ec_pki: TestPKI, scripted: ScriptedServer, patient_fetch: HttpFetcher
) -> None:
    scripted.handler = hang
    leaf = hostile_leaf(ec_pki, scripted.url)
    chain = assemble_chain(ec_pki.chain_pem(leaf))  # the issuer is in the chain
    started = time.monotonic()
    with pytest.raises(errors.FetchFailed, match="no verified response within") as caught:
        await obtain_staple(chain, fetch=patient_fetch, clock=utcnow, attempt=Attempt(timeout=1.0))
    assert 1.0 <= time.monotonic() - started < 3.0
    assert caught.value.retryable
    assert urls_asked(scripted) == ["/ocsp0"]
    assert len(scripted.requests) == 1  # the GET hung: no POST, no second responder


async def test_issuer_downloads_leave_room_for_a_responder(
    ec_pki: TestPKI, scripted: ScriptedServer
) -> None:
    """Per-request timeouts well inside the deadline: the URL cap is what ends the attempt."""
    scripted.handler = hang
    leaf = hostile_leaf(ec_pki, scripted.url)
    async with HttpFetcher(FetchSettings(total_timeout=0.2, guard=GUARD)) as fetch:
        with pytest.raises(errors.IssuerNotFound) as caught:
            await obtain_staple(
                without_issuer(leaf), fetch=fetch, clock=utcnow, attempt=Attempt(timeout=30)
            )
    assert urls_asked(scripted) == ["/ca0", "/ca1", "/ca2"]  # all but one of the four
    assert caught.value.retryable
    assert f"1 more caIssuers URLs not tried: at most {MAX_ATTEMPT_URLS}" in caught.value.message


async def test_issuer_downloads_and_responders_share_the_cap(
    ec_pki: TestPKI, scripted: ScriptedServer, patient_fetch: HttpFetcher
) -> None:
    issuer_der = ec_pki.intermediate.cert.public_bytes(serialization.Encoding.DER)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/ca2":
            return web.Response(body=issuer_der, content_type="application/pkix-cert")
        if request.path.startswith("/ca"):
            return web.Response(status=404)
        return web.Response(status=500)  # every responder refuses GET and POST

    scripted.handler = handler
    leaf = hostile_leaf(ec_pki, scripted.url)
    with pytest.raises(errors.FetchFailed) as caught:
        await obtain_staple(without_issuer(leaf), fetch=patient_fetch, clock=utcnow)
    assert urls_asked(scripted) == ["/ca0", "/ca1", "/ca2", "/ocsp0"]
    assert [m for m, _ in scripted.requests] == ["GET"] * 4 + ["POST"]  # GET, then POST
    assert "3 more responder URLs not tried" in caught.value.message

    scripted.requests.clear()  # the issuer in the chain: all four responders are asked
    with pytest.raises(errors.FetchFailed):
        await obtain_staple(
            assemble_chain(ec_pki.chain_pem(leaf)), fetch=patient_fetch, clock=utcnow
        )
    assert urls_asked(scripted) == ["/ocsp0", "/ocsp1", "/ocsp2", "/ocsp3"]


async def test_a_passed_deadline_sends_nothing() -> None:
    now = [100.0]
    sent: list[HttpRequest] = []

    async def fetch(request: HttpRequest) -> HttpResponse:
        sent.append(request)
        return HttpResponse(status=200, content_type="", body=b"", url=request.url)

    attempt = Attempt(timeout=5, clock=lambda: now[0])
    request = HttpRequest(method="GET", url="http://127.0.0.1:1/x")
    await attempt.send(fetch, request, url=request.url)
    now[0] += 5
    with pytest.raises(DeadlinePassed):
        await attempt.send(fetch, request, url=request.url)
    assert len(sent) == 1
    assert attempt.tried == [request.url]


def test_the_attempt_limit_leaves_room_for_one_whole_request() -> None:
    OperatorSettings().validate()  # the defaults: 15 s per attempt, 10 s per request
    with pytest.raises(ConfigError, match="ATTEMPT_TIMEOUT_SECONDS"):
        OperatorSettings(attempt_timeout_seconds=5, fetch_timeout_seconds=10).validate()
