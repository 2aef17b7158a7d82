"""Two operator replicas with leader election, in-process against the real kube-apiserver
and a real responder: only the Lease holder staples; a standby runs nothing that writes; a
clean stop releases the Lease and the standby takes over at once, with no OCSP request and no
write for Secrets whose staples are fresh."""

from __future__ import annotations

import time
from typing import Any

from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.names import LEASE_NAME
from support.kube import lease_holder, wait_for
from support.operators import StartOperator
from support.staples import stapled_secret


async def _holder(api: ApiClient, namespace: str) -> str | None:
    return await lease_holder(api, namespace, LEASE_NAME)


async def test_only_the_holder_staples_and_a_clean_stop_hands_over_at_once(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    common: dict[str, Any] = {
        "leader_election": True,
        "leader_election_namespace": namespace,
        "lease_duration_seconds": 3.0,
        "renew_deadline_seconds": 2.0,
        "retry_period_seconds": 0.5,
    }
    a = await start_operator(leader_election_identity="a", **common)
    b = await start_operator(leader_election_identity="b", wait_ready=False, **common)
    assert await _holder(api, namespace) == "a"
    _leaf, _der = await stapled_secret(api, namespace, "ha", pki, responder.url)
    secret_path = f"/api/v1/namespaces/{namespace}/secrets/ha"
    version = (await api.get(secret_path))["metadata"]["resourceVersion"]
    asked = responder.request_count()
    assert b.instance is None  # the standby started no reconciler, no kopf

    started = time.monotonic()
    await a.shutdown()  # a clean stop (SIGTERM in a pod): the Lease is released

    async def b_holds() -> bool | None:
        return (await _holder(api, namespace)) == "b" or None

    await wait_for(b_holds, timeout=10, what="b to take the lease")
    took = time.monotonic() - started
    await b.wait_ready()
    await b.settle()
    assert took < 3.0  # well inside one lease (3 s): released, not waited out
    assert responder.request_count() == asked  # the fresh staple was adopted, not fetched
    assert (await api.get(secret_path))["metadata"]["resourceVersion"] == version
