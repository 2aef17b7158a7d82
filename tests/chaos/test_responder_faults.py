"""Responder-side faults, end to end through the operator. Each case injects one fault after a
good staple is held, and checks what users rely on:

* the valid staple keeps being served (stays in the Secret) until it truly expires, and is then
  removed: never an expired one, never the faulty answer;
* the operator does not die;
* the refusal is visible: in the OCSPStaple status (lastError), an Event, and a metric.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from support.clocks import FakeClock
from support.kube import events_for, get_or_none, wait_for
from support.operators import StartOperator
from support.responders import ScriptedServer, hang, redirect_to
from support.staples import ENABLED, create_secret, staple_of, staple_path

OCSP = "application/ocsp-response"
Fault = Callable[[TestPKI, "Context"], Callable[[web.Request], Awaitable[web.StreamResponse]]]


class Context:
    """What a fault needs: the PKI's leaf for the Secret, the operator's clock, the real responder."""

    def __init__(self, leaf: object, clock: FakeClock, real: OpenSSLResponder) -> None:
        self.leaf = leaf
        self.clock = clock
        self.real = real


def answer(
    body: bytes, content_type: str = OCSP, status: int = 200
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, status=status)

    return handler


def per_request(build: Callable[[TestPKI, Context, datetime.datetime], bytes]) -> Fault:
    """A fault whose response is signed at request time, with times relative to the operator's
    clock then (so it stays as wrong as intended while the clock moves)."""

    def make(pki: TestPKI, ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(_request: web.Request) -> web.StreamResponse:
            now = ctx.clock().replace(microsecond=0)
            return web.Response(body=build(pki, ctx, now), content_type=OCSP)

        return handler

    return make


def crafted(**times: int) -> Fault:
    """Correctly signed by the delegated signer, with times (minutes) relative to the clock."""

    def build(pki: TestPKI, ctx: Context, now: datetime.datetime) -> bytes:
        nxt = times.get("next")
        return pki.response(
            ctx.leaf,  # type: ignore[arg-type]
            this_update=now + datetime.timedelta(minutes=times.get("this", 0)),
            next_update=None if nxt is None else now + datetime.timedelta(minutes=nxt),
        )

    return per_request(build)


def replayed(pki: TestPKI, ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A response captured earlier: older than the one held, still within its own validity.
    Made once, before the clock moves (the fault is injected at the held staple's time)."""
    now = ctx.clock().replace(microsecond=0)
    der = pki.response(
        ctx.leaf,
        this_update=now - datetime.timedelta(hours=1),
        next_update=now + datetime.timedelta(hours=48),
    )  # type: ignore[arg-type]
    return answer(der)


def signed_by(which: str) -> Fault:
    def build(pki: TestPKI, ctx: Context, now: datetime.datetime) -> bytes:
        signer = {
            "stranger": pki.stranger,
            "no-eku": pki.delegate_without_eku,
            "expired": pki.delegate_expired,
        }[which]
        return pki.response(
            ctx.leaf, this_update=now, next_update=now + datetime.timedelta(hours=4), signer=signer
        )  # type: ignore[arg-type]

    return per_request(build)


def other_serial(
    pki: TestPKI, ctx: Context
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    now = ctx.clock().replace(microsecond=0)
    stranger_leaf = pki.leaf(register=False)
    return answer(
        pki.response(stranger_leaf, this_update=now, next_update=now + datetime.timedelta(hours=4))
    )


def unsuccessful(status: ocsp.OCSPResponseStatus) -> Fault:
    der = ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
    return lambda _pki, _ctx: answer(der)


def trickle(_pki: TestPKI, _ctx: Context) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": OCSP})
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"\x30")
            await asyncio.sleep(0.05)
        return resp

    return handler


def redirect_to_https(
    _pki: TestPKI, _ctx: Context
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"https://127.0.0.1:{request.url.port}/")

    return handler


FAULTS: dict[str, tuple[Fault, str]] = {
    # name: (fault, the reason users see)
    "connection-refused": (lambda _p, _c: None, "FetchFailed"),  # type: ignore[dict-item,return-value]
    "hangs": (lambda _p, _c: hang, "FetchFailed"),
    "trickles-bytes": (trickle, "FetchFailed"),
    "http-500": (lambda _p, _c: answer(b"oops", "text/plain", 500), "FetchFailed"),
    "http-404": (lambda _p, _c: answer(b"nope", "text/plain", 404), "FetchFailed"),
    "wrong-content-type": (
        lambda _p, _c: answer(b"\x30\x03\x0a\x01\x00", "text/html"),
        "FetchFailed",
    ),
    "body-over-cap": (lambda _p, _c: answer(b"\x30" * (64 * 1024 + 1)), "FetchFailed"),
    "garbage-der": (lambda _p, _c: answer(b"\x30\x82\xff\xff garbage"), "ResponseMalformed"),
    "try-later": (unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER), "ResponderError"),
    "internal-error": (unsuccessful(ocsp.OCSPResponseStatus.INTERNAL_ERROR), "ResponderError"),
    "unauthorized": (unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), "ResponderError"),
    "malformed-request": (
        unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        "ResponderError",
    ),
    "another-serial": (other_serial, "CertIDMismatch"),
    # Times stay what they claim for the whole test (the clock moves ~2 h while retrying).
    "replay-of-older": (replayed, "Stale"),
    "this-update-in-future": (crafted(this=6 * 60, next=30 * 60), "NotYetValid"),
    "no-next-update": (crafted(this=0), "NoNextUpdate"),
    "next-update-in-past": (crafted(this=-120, next=-1), "Expired"),
    "unrelated-signer": (signed_by("stranger"), "SignerUnauthorized"),
    "delegate-without-eku": (signed_by("no-eku"), "SignerUnauthorized"),
    "expired-delegate": (signed_by("expired"), "SignerUnauthorized"),
    "redirect-to-another-scheme": (redirect_to_https, "DestinationRefused"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_keeps_the_valid_staple_then_expires_it(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, scripted: ScriptedServer, fault: str,
) -> None:  # fmt: skip
    make, reason = FAULTS[fault]
    clock = FakeClock()
    op = await start_operator(clock=clock, fetch_timeout_seconds=0.5)
    leaf = pki.leaf(ocsp_urls=[scripted.url])

    scripted.handler = redirect_to(responder.url)
    await create_secret(api, namespace, "victim", pki, leaf, annotations=ENABLED)
    good = await wait_for(lambda: staple_of(api, namespace, "victim"), what="the good staple")
    await op.settle()
    held = next(iter(op.reconciler.records.values())).held
    assert held is not None

    ctx = Context(leaf, clock, responder)
    handler = make(pki, ctx)
    if handler is None:  # connection refused: nothing listens any more
        await scripted.stop()
    else:
        scripted.handler = handler
    await op.advance(hours=13)  # past the midpoint: the refresh meets the fault
    for _ in range(4):  # and retries (backoff) keep meeting it
        await op.advance(minutes=30)

    assert await staple_of(api, namespace, "victim") == good, "the valid staple must stay"
    assert op.alive(), "the operator died"
    obj = await get_or_none(api, staple_path(namespace, "victim"))
    assert obj is not None
    assert reason in obj["status"]["lastError"]
    assert obj["status"]["consecutiveFailures"] >= 1
    events = [e["reason"] for e in await events_for(api, namespace, "victim")]
    assert {"VerificationFailed", "ResponderUnreachable", reason} & set(events), events
    reg = op.reconciler.metrics.registry
    assert (reg.get_sample_value("ocsp_stapler_fetches_total", {"result": reason}) or 0) >= 1

    await op.advance(hours=12)  # past nextUpdate of the held staple
    assert await staple_of(api, namespace, "victim") is None, "an expired staple must go"
    assert "StapleExpired" in [e["reason"] for e in await events_for(api, namespace, "victim")]
