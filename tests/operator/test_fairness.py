"""No tenant starves another: one namespace's hanging certificates against another's first staple.

The real control plane, the real ``openssl ocsp`` responder for the healthy tenant, and a
loopback server that accepts and never answers for the hostile one: every caIssuers and OCSP
URL of its certificates points there, and their tls.crt leaves the issuer out, so each attempt
starts with downloads that hang.
"""

from __future__ import annotations

import asyncio
import time

from devcluster.pki import Issued, TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from support.clocks import FakeClock
from support.kube import secret_path, tls_secret, wait_for
from support.operators import StartOperator
from support.responders import LOOPBACK_CIDRS, ScriptedServer, hang
from support.staples import ENABLED, create_secret, staple_of, status_with

HOSTILE = 4


def hanging_leaf(pki: TestPKI, base: str, i: int) -> Issued:
    return pki.leaf(
        f"h{i}.hostile.test",
        ca_issuer_urls=[f"{base}/ca{j}" for j in range(4)],
        ocsp_urls=[f"{base}/ocsp{j}" for j in range(4)],
    )


async def create_hostile(api: ApiClient, namespace: str, pki: TestPKI, base: str) -> None:
    for i in range(HOSTILE):
        leaf = hanging_leaf(pki, base, i)
        body = tls_secret(
            f"hostile-{i}", namespace, crt=leaf.pem, key=leaf.key_pem, annotations=ENABLED
        )  # the leaf alone: the issuer must come from the (hanging) caIssuers URLs
        await api.create(secret_path(namespace), body)


async def test_a_namespace_is_stapled_while_anothers_attempts_hang(
    api: ApiClient, namespace: str, other_namespace: str, pki: TestPKI,
    responder: OpenSSLResponder, scripted: ScriptedServer, start_operator: StartOperator,
) -> None:  # fmt: skip
    scripted.handler = hang
    op = await start_operator(
        namespaces=(namespace, other_namespace),
        concurrency=2,
        responder_allow_cidrs=LOOPBACK_CIDRS,
        fetch_timeout_seconds=60,
        attempt_timeout_seconds=60,  # longer than this test: every hostile attempt hangs
    )
    await create_hostile(api, namespace, pki, scripted.url)
    await wait_for(lambda: asyncio.sleep(0, bool(scripted.requests)), what="a hanging attempt")

    started = time.monotonic()
    await create_secret(
        api,
        other_namespace,
        "tenant",
        pki,
        pki.leaf(ocsp_urls=[responder.url]),
        annotations=ENABLED,
    )
    await wait_for(lambda: staple_of(api, other_namespace, "tenant"), what="the other's staple")
    latency = time.monotonic() - started

    hostile = [r for ref, r in op.reconciler.records.items() if ref.namespace == namespace]
    assert len(hostile) == HOSTILE
    assert all(r.failures == 0 and r.last_attempt is None for r in hostile)  # still hanging
    assert len(scripted.requests) == 1  # a holds its share (1 of 2 workers), one URL at a time
    assert latency < 10  # typically ~0.3 s, as without the hostile load


async def test_a_hanging_certificate_fails_at_the_attempt_deadline_and_retries(
    api: ApiClient, namespace: str, pki: TestPKI, scripted: ScriptedServer,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    scripted.handler = hang
    clock = FakeClock()
    op = await start_operator(
        clock=clock,
        responder_allow_cidrs=LOOPBACK_CIDRS,
        fetch_timeout_seconds=1,
        attempt_timeout_seconds=1.5,
    )
    leaf = hanging_leaf(pki, scripted.url, 0)
    started = time.monotonic()
    await api.create(
        secret_path(namespace),
        tls_secret("hostile", namespace, crt=leaf.pem, key=leaf.key_pem, annotations=ENABLED),
    )
    obj = await wait_for(
        lambda: status_with(api, namespace, "hostile", "consecutiveFailures", 1),
        what="the first attempt to fail",
    )
    assert time.monotonic() - started < 8  # one 1.5 s attempt, not four 1 s downloads + more
    assert "1.5 s limit" in obj["status"]["lastError"]
    assert "FetchFailed" in obj["status"]["lastError"]
    assert len(scripted.requests) == 2  # the first download's 1 s, then the rest of 1.5 s

    await op.advance(minutes=2)  # past the backoff: the next attempt prepares afresh
    obj = await wait_for(
        lambda: status_with(api, namespace, "hostile", "consecutiveFailures", 2),
        what="the second attempt to fail",
    )
    assert "1.5 s limit" in obj["status"]["lastError"]
    (record,) = op.reconciler.records.values()
    assert record.problem is None  # still retried: a timeout is not a verdict on the Secret
