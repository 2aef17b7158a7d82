"""Cluster-side faults: the API server crashing, watches cut, concurrent writers, Secrets
deleted mid-fetch, the operator SIGKILLed mid-write. Nothing lost, nothing duplicated, nothing
wrong written, and the processes keep going."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from devcluster.controlplane import ControlPlane, running
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import ApiClient, Conflict, load_credentials, resource_path
from ocsp_stapler.ocsp.chains import sha256_hex
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, verify_response
from support.clocks import utcnow
from support.kube import get_or_none, secret_path, wait_for
from support.operators import RunningOperator, StartOperator
from support.responders import LOOPBACK_CIDRS, ScriptedServer, redirect_to
from support.staples import ENABLED, create_secret, staple_of, staple_path, stapled_secret

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own: these tests crash it."""
    with running(Path(tmp_path_factory.mktemp("crashing-cluster"))) as cp:
        yield cp


@pytest.fixture
async def own_api(own_cluster: ControlPlane) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_credentials(str(own_cluster.kubeconfig))) as client:
        yield client


async def test_api_server_crash_and_restart(
    own_cluster: ControlPlane,
    own_api: ApiClient,
    pki: TestPKI,
    responder: OpenSSLResponder,
) -> None:
    namespace = "crash"
    await own_api.create(resource_path(api_version="v1", plural="namespaces"),
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})  # fmt: skip
    settings = OperatorSettings(
        namespaces=(namespace,), metrics_port=0, health_port=0, responder_allow_cidrs=LOOPBACK_CIDRS
    )
    op = await RunningOperator(
        settings=settings, credentials=load_credentials(str(own_cluster.kubeconfig))
    ).start()
    try:
        _, first = await stapled_secret(own_api, namespace, "before", pki, responder.url)
        await op.settle()
        await asyncio.to_thread(own_cluster.restart_apiserver, down_for=2.0)
        async with ApiClient(
            load_credentials(str(own_cluster.kubeconfig))
        ) as api:  # fresh connections
            _, second = await stapled_secret(api, namespace, "after", pki, responder.url)
            await op.settle()
            assert await staple_of(api, namespace, "before") == first  # untouched, not re-fetched
            assert second
        assert op.alive()
        writes = op.reconciler.metrics.registry.get_sample_value(
            "ocsp_stapler_secret_writes_total", {"action": "write"}
        )
        assert writes == 2  # one write per Secret: no duplicate after the crash
    finally:
        await op.shutdown()


async def test_a_concurrent_writer_does_not_conflict_with_staples(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    await create_secret(api, namespace, "busy", pki, leaf, annotations=ENABLED)
    conflicts = 0

    async def writer() -> None:
        nonlocal conflicts
        for i in range(60):  # another controller, labelling the Secret with preconditions
            body = await api.get(secret_path(namespace, "busy"))
            patch = {
                "metadata": {
                    "labels": {"round": str(i)},
                    "resourceVersion": body["metadata"]["resourceVersion"],
                }
            }
            try:
                await api.patch(secret_path(namespace, "busy"), patch)
            except Conflict:
                conflicts += 1

    await asyncio.gather(writer(), writer())
    der = await wait_for(
        lambda: staple_of(api, namespace, "busy"), what="the staple despite the writers"
    )
    body = await api.get(secret_path(namespace, "busy"))
    assert body["metadata"]["annotations"]["ocsp-stapler.dev/staple-cert-sha256"] == sha256_hex(
        leaf.cert
    )
    assert _verifies(pki, leaf, der)
    print(f"the other writers saw {conflicts} conflicts among themselves")


def _verifies(pki: TestPKI, leaf: object, der: bytes) -> bool:
    issuer = pki.intermediate.cert
    staple = verify_response(der, cert_id=CertID.of(leaf.cert, issuer), issuer=issuer, now=utcnow())  # type: ignore[attr-defined]
    return staple.status is CertStatus.GOOD


async def test_secret_deleted_during_a_fetch(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, scripted: ScriptedServer,
) -> None:  # fmt: skip
    gate = asyncio.Event()
    scripted.handler = redirect_to(responder.url, gate=gate)
    op = await start_operator(fetch_timeout_seconds=30)
    await create_secret(
        api, namespace, "gone", pki, pki.leaf(ocsp_urls=[scripted.url]), annotations=ENABLED
    )
    await wait_for(lambda: asyncio.sleep(0, bool(scripted.requests)), what="the fetch to start")
    await api.delete(secret_path(namespace, "gone"))
    await asyncio.sleep(0.5)
    gate.set()
    await op.settle()
    assert (
        await get_or_none(api, secret_path(namespace, "gone")) is None
    )  # not recreated by a write
    await wait_for(lambda: _absent(api, staple_path(namespace, "gone")), what="no OCSPStaple left")
    assert op.alive()
    assert op.reconciler.records == {}


async def _absent(api: ApiClient, path: str) -> bool:
    return await get_or_none(api, path) is None


KILL_TEST_SECRETS = 60


@pytest.fixture
def own_responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    """A responder of this test's own: `openssl ocsp` serves one connection at a time and
    blocks for good on one that closes before its request, which a SIGKILLed operator may
    leave behind; the session's shared responder would then hang every later test."""
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r


async def test_operator_sigkilled_mid_write_then_restarted(
    api: ApiClient, namespace: str, pki: TestPKI, own_responder: OpenSSLResponder,
    cluster: ControlPlane, crd: None, tmp_path: Path,
) -> None:  # fmt: skip
    leaves = [
        pki.leaf(f"s{i}.example.test", ocsp_urls=[own_responder.url], register=False)
        for i in range(KILL_TEST_SECRETS)
    ]
    pki.register_many(leaves)
    for i, leaf in enumerate(leaves):
        await create_secret(api, namespace, f"s{i}", pki, leaf, annotations=ENABLED)
    env = {**os.environ, "OCSP_STAPLER_NAMESPACES": namespace, "OCSP_STAPLER_METRICS_PORT": "0",
           "OCSP_STAPLER_HEALTH_PORT": "0", "OCSP_STAPLER_CONCURRENCY": "2",
           "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS": ",".join(LOOPBACK_CIDRS)}  # fmt: skip
    argv = [CLI, "operator", "--kubeconfig", str(cluster.kubeconfig)]

    async def stapled_count() -> int:
        listed = await api.get(secret_path(namespace))
        return sum("tls.ocsp-staple" in s.get("data", {}) for s in listed["items"])

    first = subprocess.Popen(
        argv, env=env, stdout=(tmp_path / "first.log").open("wb"), stderr=subprocess.STDOUT
    )
    # Killed at the first staples: on a busy machine polling lags, and a later kill could find
    # the work already done.
    await wait_for(lambda: _at_least(stapled_count, 1), timeout=30, what="a first staple")
    first.send_signal(signal.SIGKILL)  # mid-run, likely mid-write
    first.wait(timeout=10)
    partial = await stapled_count()
    assert partial < KILL_TEST_SECRETS, "killed too late to test anything"
    second = subprocess.Popen(
        argv, env=env, stdout=(tmp_path / "second.log").open("wb"), stderr=subprocess.STDOUT
    )
    try:
        await wait_for(
            lambda: _at_least(stapled_count, KILL_TEST_SECRETS),
            timeout=60,
            what="all staples after the restart",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    listed = await api.get(secret_path(namespace))
    for secret in listed["items"]:
        i = int(secret["metadata"]["name"][1:])
        assert secret["metadata"]["annotations"][
            "ocsp-stapler.dev/staple-cert-sha256"
        ] == sha256_hex(leaves[i].cert)
        assert _verifies(pki, leaves[i], base64.b64decode(secret["data"]["tls.ocsp-staple"]))
        assert not secret["metadata"].get("finalizers")


async def _at_least(count: object, n: int) -> bool:
    return await count() >= n  # type: ignore[operator]
