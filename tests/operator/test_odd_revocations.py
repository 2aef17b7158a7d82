"""A revocation is never hidden: an answer whose reason code cryptography cannot name (7 is
unused in RFC 5280, 11 and above undefined) replaces the held good staple, with a Warning
Event and a status that say revoked and give the raw code. (Before: a ValueError, the old
good staple kept, no Event, a retry every minute.)"""

from __future__ import annotations

import datetime

import pytest
from aiohttp import web
from devcluster.pki import TestPKI

from ocsp_stapler.k8s.client import ApiClient
from support.clocks import FakeClock
from support.kube import events_for, wait_for
from support.ocsp_der import Answer, ResponseSpec
from support.operators import StartOperator
from support.responders import ScriptedServer
from support.staples import ENABLED, create_secret, staple_of, status_with


@pytest.mark.parametrize("code", [7, 11])
async def test_a_revocation_with_an_odd_reason_replaces_the_good_staple(
    code: int, api: ApiClient, namespace: str, pki: TestPKI, scripted: ScriptedServer,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    clock = FakeClock()
    op = await start_operator(clock=clock)
    leaf = pki.leaf(ocsp_urls=[scripted.url + "/ocsp"])
    answer: dict[str, bytes] = {}

    def respond(status: str, reason: int | None) -> None:
        now = clock()
        answer["der"] = ResponseSpec(
            answers=[
                Answer(
                    serial=leaf.cert.serial_number,
                    issuer=pki.intermediate.cert,
                    status=status,  # type: ignore[arg-type]
                    reason=reason,
                    this_update=now - datetime.timedelta(minutes=1),
                    next_update=now + datetime.timedelta(hours=24),
                )
            ],
            key=pki.delegate.key,  # type: ignore[arg-type]
            responder=pki.delegate.cert,
            certs=(pki.delegate.cert,),
            produced_at=now,
        ).der(now)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answer["der"], content_type="application/ocsp-response")

    scripted.handler = handler
    respond("good", None)
    await create_secret(api, namespace, "odd", pki, leaf, annotations=ENABLED)
    good = await wait_for(lambda: staple_of(api, namespace, "odd"), what="the good staple")

    clock.advance(datetime.timedelta(hours=14))  # past the midpoint and its jitter: due
    respond("revoked", code)
    await op.advance()

    async def replaced() -> bytes | None:
        der = await staple_of(api, namespace, "odd")
        return der if der and der != good else None

    assert await wait_for(replaced, what="the revoked staple") == answer["der"]
    obj = await wait_for(lambda: status_with(api, namespace, "odd", "certStatus", "revoked"))
    assert obj["status"]["revocationReason"] == f"reason code {code}"
    events = [
        e for e in await events_for(api, namespace, "odd") if e["reason"] == "CertificateRevoked"
    ]
    assert len(events) == 1
    assert events[0]["type"] == "Warning"
    assert f"reason code {code}" in events[0]["message"]
