"""The operator against the real kube-apiserver and the real `openssl ocsp` responder:
first staple, revocation, rotation, expiry, restart, opt-out."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
from devcluster.controlplane import ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient, Invalid, resource_path
from ocsp_stapler.ocsp.chains import sha256_hex
from support.clocks import FakeClock
from support.kube import (
    event_reasons,
    events_for,
    get_or_none,
    secret_path,
    tls_secret,
    wait_for,
)
from support.operators import StartOperator
from support.staples import (
    ENABLED,
    create_secret,
    gone,
    openssl_verifies,
    staple_of,
    staple_path,
    stapled_secret,
    status_with,
)


async def test_first_staple(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, tmp_path: Path, cluster: ControlPlane,
) -> None:  # fmt: skip
    await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await create_secret(api, namespace, "web", pki, leaf, annotations=ENABLED)
    der = await wait_for(lambda: staple_of(api, namespace, "web"), what="the first staple")
    latency = loop.time() - began
    print(f"first staple after {latency:.3f} s")  # measured for real by `make bench`
    assert openssl_verifies(pki, leaf, der, tmp_path) == "good"

    body = await api.get(secret_path(namespace, "web"))
    assert body["metadata"]["annotations"]["ocsp-stapler.dev/staple-cert-sha256"] == sha256_hex(
        leaf.cert
    )
    assert not body["metadata"].get("finalizers")
    assert not [a for a in body["metadata"]["annotations"] if a.startswith("kopf.")]

    staple = await wait_for(lambda: status_with(api, namespace, "web", "certStatus"), what="status")
    status = staple["status"]
    assert status["certStatus"] == "good"
    assert status["responderURL"] == responder.url
    assert status["certificate"]["sha256"] == sha256_hex(leaf.cert)
    assert status["certificate"]["serial"] == format(leaf.cert.serial_number, "X")
    assert status["signer"] == "delegated"
    assert status["consecutiveFailures"] == 0
    assert status["refreshAt"] < status["nextUpdate"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Stapled")
    generation = staple["metadata"]["generation"]
    assert status["observedGeneration"] == ready["observedGeneration"] == generation
    assert staple["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert "Stapled" in await event_reasons(api, namespace, "web")
    events = await api.get(
        resource_path(api_version="events.k8s.io/v1", plural="events", namespace=namespace),
        fieldSelector="regarding.name=web,regarding.kind=Secret",
    )
    stapled = next(e for e in events["items"] if e["reason"] == "Stapled")
    assert stapled["reportingController"] == "ocsp-stapler.dev/operator"
    assert stapled["action"] == "Staple"
    assert stapled["regarding"]["uid"] == body["metadata"]["uid"]
    with pytest.raises(Invalid, match="cannot be changed"):  # so the generation stays observed
        await api.patch(staple_path(namespace, "web"), {"spec": {"secretName": "other"}})

    table = cluster.kubectl("get", "staples", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "SECRET",
        "STATUS",
        "NEXT-UPDATE",
        "REFRESH-AT",
        "READY",
        "AGE",
    ]
    assert row.split()[:3] == ["web", "web", "good"]
    assert row.split()[5] == "True"
    wide = cluster.kubectl("get", "staples", "-n", namespace, "-o", "wide").splitlines()
    assert wide[0].split()[5:8] == ["READY", "REASON", "LAST-ERROR"]
    assert wide[1].split()[5:7] == ["True", "Stapled"]


async def test_revoked_is_stapled_with_a_warning(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, tmp_path: Path,
) -> None:  # fmt: skip
    clock = FakeClock()
    op = await start_operator(clock=clock)
    leaf, _ = await stapled_secret(api, namespace, "rev", pki, responder.url)
    pki.set_status(leaf, "R", reason="keyCompromise")
    await op.advance(hours=14)  # past the midpoint of the 24 h response and its jitter
    der = await wait_for(lambda: staple_of(api, namespace, "rev"))
    assert openssl_verifies(pki, leaf, der, tmp_path) == "revoked"
    events = await events_for(api, namespace, "rev")
    revoked = [e for e in events if e["reason"] == "CertificateRevoked"]
    assert len(revoked) == 1
    assert revoked[0]["type"] == "Warning"
    assert "keyCompromise" in revoked[0]["message"]
    obj = await wait_for(lambda: status_with(api, namespace, "rev", "certStatus", "revoked"))
    assert obj["status"]["revocationReason"] == "keyCompromise"
    ready = obj["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "Revoked")


async def test_rotation_replaces_the_staple(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, tmp_path: Path,
) -> None:  # fmt: skip
    await start_operator()
    old = pki.leaf(ocsp_urls=[responder.url])
    await create_secret(api, namespace, "rot", pki, old, annotations=ENABLED)
    old_der = await wait_for(lambda: staple_of(api, namespace, "rot"))
    new = pki.leaf(ocsp_urls=[responder.url])
    await api.patch(
        secret_path(namespace, "rot"),
        {"data": {"tls.crt": base64.b64encode(pki.chain_pem(new)).decode()}},
    )

    async def new_staple() -> bytes | None:
        der = await staple_of(api, namespace, "rot")
        return der if der and der != old_der else None

    der = await wait_for(new_staple, what="the new certificate's staple")
    assert openssl_verifies(pki, new, der, tmp_path) == "good"
    body = await api.get(secret_path(namespace, "rot"))
    assert body["metadata"]["annotations"]["ocsp-stapler.dev/staple-cert-sha256"] == sha256_hex(
        new.cert
    )


async def test_opting_out_cleans_up(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    await create_secret(api, namespace, "out", pki, leaf, annotations={**ENABLED, "team": "web"})
    await wait_for(lambda: staple_of(api, namespace, "out"))
    await wait_for(lambda: get_or_none(api, staple_path(namespace, "out")))
    await api.patch(
        secret_path(namespace, "out"),
        {"metadata": {"annotations": {"ocsp-stapler.dev/enabled": None}}},
    )

    async def clean() -> dict[str, Any] | None:
        body = await api.get(secret_path(namespace, "out"))
        ours = [
            a for a in body["metadata"].get("annotations", {}) if a.startswith("ocsp-stapler.dev/")
        ]
        return None if ours or "tls.ocsp-staple" in body["data"] else body

    body = await wait_for(clean, what="cleanup")
    assert body["metadata"]["annotations"] == {"team": "web"}
    assert set(body["data"]) == {"tls.crt", "tls.key"}
    await wait_for(lambda: gone(api, staple_path(namespace, "out")), what="OCSPStaple deleted")
    assert op.reconciler.records == {}


async def test_someone_elses_staple_and_ocspstaple_are_left_alone(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    """A staple in a Secret that never opted in (a hand-made one, another tool's) and an
    OCSPStaple without the operator's label are not the operator's: seen while it runs, and
    again after a restart, neither is touched; an opt-out while no operator ran is still
    cleaned up, by the annotations the operator wrote beside its staple."""
    op = await start_operator()
    await stapled_secret(api, namespace, "left", pki, responder.url)
    await op.reconciler.drain()
    await op.shutdown()
    await api.patch(secret_path(namespace, "left"),
                    {"metadata": {"annotations": {"ocsp-stapler.dev/enabled": None}}})  # fmt: skip
    foreign = tls_secret("foreign", namespace, crt=b"-", extra={"tls.ocsp-staple": b"theirs"})
    await api.create(secret_path(namespace), foreign)
    hand_made = {"apiVersion": "ocsp-stapler.dev/v1alpha1", "kind": "OCSPStaple",
                 "metadata": {"name": "foreign"}, "spec": {"secretName": "foreign"}}  # fmt: skip
    staples = resource_path(api_version="ocsp-stapler.dev/v1alpha1", plural="ocspstaples",
                            namespace=namespace)  # fmt: skip
    await api.create(staples, hand_made)
    before = (await api.get(secret_path(namespace, "foreign")))["metadata"]["resourceVersion"]

    op = await start_operator()  # it lists every TLS Secret: "foreign" and "left"

    async def left_cleaned() -> bool | None:
        body = await api.get(secret_path(namespace, "left"))
        return ("tls.ocsp-staple" not in body["data"]) or None

    await wait_for(left_cleaned, what="the opt-out made while no operator ran cleaned up")
    await api.patch(secret_path(namespace, "foreign"),
                    {"metadata": {"labels": {"touched": "yes"}}})  # fmt: skip  # a new event
    await op.reconciler.drain()
    body = await api.get(secret_path(namespace, "foreign"))
    assert base64.b64decode(body["data"]["tls.ocsp-staple"]) == b"theirs"
    assert body["metadata"]["labels"] == {"touched": "yes"}
    assert body["metadata"]["resourceVersion"] != before  # our label edit, and nothing else
    await api.delete(secret_path(namespace, "foreign"))
    await op.reconciler.drain()
    assert await get_or_none(api, staple_path(namespace, "foreign")) is not None
