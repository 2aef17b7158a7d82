"""What users rely on when things go wrong: outages, rotations mid-fetch, restarts, unknowns,
certificates without responders, and many Secrets sharing one certificate."""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

import pytest
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller import secretpatches
from ocsp_stapler.controller.bodies import SecretView
from ocsp_stapler.k8s.client import ApiClient, Invalid
from ocsp_stapler.ocsp.chains import sha256_hex
from ocsp_stapler.ocsp.responses import CertStatus
from support.clocks import FakeClock, utcnow
from support.kube import (
    SecretHistory,
    event_reasons,
    events_for,
    get_or_none,
    secret_path,
    tls_secret,
    wait_for,
)
from support.operators import StartOperator
from support.responders import ScriptedServer, redirect_to
from support.staples import (
    ENABLED,
    create_secret,
    staple_of,
    staple_path,
    stapled_secret,
    status_with,
)


async def test_outage_keeps_the_staple_until_next_update_then_removes_it(
    api: ApiClient, namespace: str, pki: TestPKI, start_operator: StartOperator
) -> None:
    clock = FakeClock()
    with OpenSSLResponder(pki, validity_minutes=10) as short:
        op = await start_operator(clock=clock)
        leaf = pki.leaf(ocsp_urls=[short.url])
        async with SecretHistory(api, namespace) as history:
            await create_secret(api, namespace, "out", pki, leaf, annotations=ENABLED)
            first = await wait_for(lambda: staple_of(api, namespace, "out"))
            short.stop()  # the responder goes away
            for _ in range(8):  # past the midpoint (5 min): refreshes fail, with backoff
                await op.advance(minutes=1)
            assert await staple_of(api, namespace, "out") == first  # still served
            record = op.reconciler.records[next(iter(op.reconciler.records))]
            assert record.failures >= 3
            assert "ResponderUnreachable" in await event_reasons(api, namespace, "out")
            obj = await api.get(staple_path(namespace, "out"))
            assert obj["status"]["consecutiveFailures"] == record.failures
            assert obj["status"]["certStatus"] == "good"
            # What the alerts read: the fetches fail (status Error, whatever is held), the
            # expiry of the staple still held, and no refresh time (no success scheduled one).
            reg, labels = op.reconciler.metrics.registry, {"namespace": namespace, "secret": "out"}
            series = "ocsp_stapler_certificate_status"
            assert reg.get_sample_value(series, {**labels, "status": "Error"}) == 1
            assert reg.get_sample_value(series, {**labels, "status": "good"}) is None
            assert reg.get_sample_value("ocsp_stapler_staple_expiry_timestamp_seconds", labels)
            assert (
                reg.get_sample_value("ocsp_stapler_staple_refresh_timestamp_seconds", labels)
                is None
            )

            await op.advance(minutes=2, seconds=30)  # now past nextUpdate (10 min)
            assert await staple_of(api, namespace, "out") is None
            events = await events_for(api, namespace, "out")
            expired = [e for e in events if e["reason"] == "StapleExpired"]
            assert len(expired) == 1
            assert expired[0]["type"] == "Warning"
            obj = await api.get(staple_path(namespace, "out"))
            ready = obj["status"]["conditions"][0]
            assert ready["status"] == "False"
        history.assert_no_trace_of_kopf()


async def test_a_restart_sends_no_request_when_nothing_is_due(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    first = await start_operator()
    leaves = [pki.leaf(ocsp_urls=[responder.url]) for _ in range(3)]
    for i, leaf in enumerate(leaves):
        await create_secret(api, namespace, f"s{i}", pki, leaf, annotations=ENABLED)
    staples = [await wait_for(lambda i=i: staple_of(api, namespace, f"s{i}")) for i in range(3)]
    await first.settle()
    await first.shutdown()
    before = responder.request_count()
    objects = [await api.get(staple_path(namespace, f"s{i}")) for i in range(3)]

    later = FakeClock(utcnow() + datetime.timedelta(minutes=10))  # the takeover is later
    second = await start_operator(clock=later)
    await wait_for(
        lambda: asyncio.sleep(0, len(second.reconciler.records) == 3), what="all Secrets seen"
    )
    await second.settle()
    assert responder.request_count() == before
    # Ready stayed True: its transition time is the first operator's, not the restart's.
    for i, obj in enumerate(objects):
        now = await api.get(staple_path(namespace, f"s{i}"))
        assert now["status"]["conditions"] == obj["status"]["conditions"]
    assert [await staple_of(api, namespace, f"s{i}") for i in range(3)] == staples
    for record in second.reconciler.records.values():
        assert record.held is not None  # the staple in the Secret was verified and adopted
        assert record.refresh_at is not None


async def test_a_restart_fetches_what_is_due(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    first = await start_operator()
    _leaf, _ = await stapled_secret(api, namespace, "due", pki, responder.url)
    await first.shutdown()
    before = responder.request_count()
    later = FakeClock()
    later.advance(datetime.timedelta(hours=14))  # past its midpoint (and the jitter after it)
    second = await start_operator(clock=later)
    await wait_for(
        lambda: asyncio.sleep(0, responder.request_count() == before + 1), what="a refresh"
    )
    await second.settle()
    assert responder.request_count() == before + 1


async def test_rotation_during_a_fetch_never_writes_the_stale_staple(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, scripted: ScriptedServer,
) -> None:  # fmt: skip
    gate = asyncio.Event()
    scripted.handler = redirect_to(responder.url, gate=gate)
    await start_operator()
    old = pki.leaf(ocsp_urls=[scripted.url])
    new = pki.leaf(ocsp_urls=[responder.url])
    async with SecretHistory(api, namespace) as history:
        await create_secret(api, namespace, "mid", pki, old, annotations=ENABLED)
        await wait_for(lambda: asyncio.sleep(0, bool(scripted.requests)), what="the fetch to start")
        await api.patch(
            secret_path(namespace, "mid"),
            {"data": {"tls.crt": base64.b64encode(pki.chain_pem(new)).decode()}},
        )
        await asyncio.sleep(0.5)  # the operator sees the rotation while the old fetch hangs
        gate.set()

        async def new_staple() -> bytes | None:
            body = await api.get(secret_path(namespace, "mid"))
            annotations = body["metadata"].get("annotations", {})
            ok = annotations.get("ocsp-stapler.dev/staple-cert-sha256") == sha256_hex(new.cert)
            return base64.b64decode(body["data"]["tls.ocsp-staple"]) if ok else None

        await wait_for(new_staple, what="the new certificate's staple")
    old_sha = sha256_hex(old.cert)
    for version in history.of("mid"):
        annotations = version["metadata"].get("annotations", {})
        assert annotations.get("ocsp-stapler.dev/staple-cert-sha256") != old_sha
        if "tls.ocsp-staple" in version["data"]:
            assert base64.b64decode(version["data"]["tls.crt"]) == pki.chain_pem(new)
    history.assert_no_trace_of_kopf()


async def test_the_write_precondition_is_enforced_by_the_api_server(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    """The in-memory check aside, the patch itself refuses a rotated tls.crt (a race the
    watch has not reported yet): drive the reconciler's write with a stale view."""
    op = await start_operator()
    leaf, _ = await stapled_secret(api, namespace, "pre", pki, responder.url)
    await op.settle()
    rec = next(iter(op.reconciler.records.values()))
    held = rec.held
    assert held is not None
    rotated = pki.leaf(ocsp_urls=[responder.url])
    body = await api.patch(
        secret_path(namespace, "pre"),
        {
            "data": {
                "tls.crt": base64.b64encode(pki.chain_pem(rotated)).decode(),
                "tls.ocsp-staple": None,
            }
        },
    )
    stale = SecretView.of(
        {
            **body,
            "data": {**body["data"], "tls.crt": base64.b64encode(pki.chain_pem(leaf)).decode()},
        },
        "tls.ocsp-staple",
    )
    patch = secretpatches.write_staple(
        stale,
        staple_key="tls.ocsp-staple",
        staple_b64=base64.b64encode(held.der).decode(),
        cert_sha256=sha256_hex(leaf.cert),
    )
    with pytest.raises(Invalid):
        await api.patch(secret_path(namespace, "pre"), patch, patch_type="json")
    after = await api.get(secret_path(namespace, "pre"))
    assert after["data"].get("tls.ocsp-staple") != base64.b64encode(held.der).decode()


async def test_unknown_is_not_stapled_and_the_good_staple_is_kept(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    clock = FakeClock()
    op = await start_operator(clock=clock)
    leaf, good = await stapled_secret(api, namespace, "unk", pki, responder.url)
    pki.forget(leaf)  # the responder now answers "unknown"
    await op.advance(hours=14)
    assert await staple_of(api, namespace, "unk") == good
    assert "CertificateUnknown" in await event_reasons(api, namespace, "unk")
    record = next(iter(op.reconciler.records.values()))
    assert record.last_status is CertStatus.UNKNOWN
    assert record.failures == 1
    assert record.refresh_at is not None
    assert record.refresh_at < record.held.expires_at  # type: ignore[union-attr]
    await op.advance(minutes=5)
    assert record.failures >= 2  # retried with backoff
    assert await staple_of(api, namespace, "unk") == good


async def test_a_leaf_with_an_unknown_serial_gets_no_staple(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url], register=False)
    await create_secret(api, namespace, "new", pki, leaf, annotations=ENABLED)
    await wait_for(lambda: _status_is(api, namespace, "new", "unknown"))
    assert await staple_of(api, namespace, "new") is None


async def _status_is(api: ApiClient, namespace: str, name: str, cert_status: str) -> bool:
    obj = await get_or_none(api, staple_path(namespace, name))
    return bool(obj and obj.get("status", {}).get("certStatus") == cert_status)


async def test_no_responder_is_one_status_and_one_event(
    api: ApiClient, namespace: str, pki: TestPKI, start_operator: StartOperator
) -> None:
    clock = FakeClock()
    op = await start_operator(clock=clock)
    leaf = pki.leaf(ocsp_urls=[])
    created = await create_secret(api, namespace, "le", pki, leaf, annotations=ENABLED)
    await wait_for(lambda: _status_is(api, namespace, "le", "NoResponder"))
    await op.advance(hours=3)
    reasons = await event_reasons(api, namespace, "le")
    assert reasons.count("NoResponder") == 1
    body = await api.get(secret_path(namespace, "le"))
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert op.reconciler.scheduler.due_at(next(iter(op.reconciler.records))) is None


async def test_responder_override_and_its_guard(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    await start_operator()
    leaf = pki.leaf(ocsp_urls=[])
    await create_secret(
        api,
        namespace,
        "ovr",
        pki,
        leaf,
        annotations={**ENABLED, "ocsp-stapler.dev/responder-url": responder.url},
    )
    assert await wait_for(lambda: staple_of(api, namespace, "ovr"))

    metadata = pki.leaf(ocsp_urls=[])
    await create_secret(
        api, namespace, "imds", pki, metadata,
        annotations={**ENABLED, "ocsp-stapler.dev/responder-url": "http://169.254.169.254/latest/meta-data/"},
    )  # fmt: skip
    await wait_for(
        lambda: _has_event(api, namespace, "imds", "DestinationRefused"), what="a refusal Event"
    )
    events = [
        e for e in await events_for(api, namespace, "imds") if e["reason"] == "DestinationRefused"
    ]
    assert "169.254.0.0/16" in events[0]["message"]
    assert await staple_of(api, namespace, "imds") is None


async def _has_event(api: ApiClient, namespace: str, name: str, reason: str) -> bool:
    return reason in await event_reasons(api, namespace, name)


async def test_one_certificate_in_many_secrets_is_fetched_once(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    clock = FakeClock()
    op = await start_operator(clock=clock)
    before = responder.request_count()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    await asyncio.gather(
        *(
            create_secret(api, namespace, f"copy{i}", pki, leaf, annotations=ENABLED)
            for i in range(5)
        )
    )
    staples = [await wait_for(lambda i=i: staple_of(api, namespace, f"copy{i}")) for i in range(5)]
    assert len(set(staples)) == 1
    await op.settle()
    assert responder.request_count() == before + 1
    await op.advance(hours=14)
    assert responder.request_count() == before + 2  # one refresh for all five


async def test_revoked_action_remove(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    clock = FakeClock()
    op = await start_operator(clock=clock, revoked_action="remove")
    leaf, _ = await stapled_secret(api, namespace, "rr", pki, responder.url)
    pki.set_status(leaf, "R")
    await op.advance(hours=14)
    assert await staple_of(api, namespace, "rr") is None
    reasons = await event_reasons(api, namespace, "rr")
    assert "CertificateRevoked" in reasons
    assert "StapleRemoved" in reasons
    # Nothing is held, and the revocation alert still has its series.
    labels = {"namespace": namespace, "secret": "rr", "status": "revoked"}
    assert (
        op.reconciler.metrics.registry.get_sample_value("ocsp_stapler_certificate_status", labels)
        == 1
    )


async def test_metrics(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    op = await start_operator()
    _leaf, _ = await stapled_secret(api, namespace, "m", pki, responder.url)
    await op.settle()
    reg = op.reconciler.metrics.registry
    labels = {"namespace": namespace, "secret": "m"}
    assert reg.get_sample_value("ocsp_stapler_managed_secrets") == 1
    assert reg.get_sample_value("ocsp_stapler_fetches_total", {"result": "good"}) == 1
    assert reg.get_sample_value("ocsp_stapler_fetch_duration_seconds_count") == 1
    assert (
        reg.get_sample_value("ocsp_stapler_certificate_status", {**labels, "status": "good"}) == 1
    )
    # One series per Secret: the current status only.
    assert (
        reg.get_sample_value("ocsp_stapler_certificate_status", {**labels, "status": "revoked"})
        is None
    )
    record = next(iter(op.reconciler.records.values()))
    assert record.held is not None
    assert (
        reg.get_sample_value("ocsp_stapler_staple_expiry_timestamp_seconds", labels)
        == record.held.expires_at.timestamp()
    )
    assert record.refresh_at is not None
    assert (
        reg.get_sample_value("ocsp_stapler_staple_refresh_timestamp_seconds", labels)
        == record.refresh_at.timestamp()
    )
    assert reg.get_sample_value("ocsp_stapler_secret_writes_total", {"action": "write"}) == 1


async def test_a_bad_signature_is_refused_with_a_warning(
    api: ApiClient, namespace: str, pki: TestPKI, start_operator: StartOperator
) -> None:
    await start_operator()
    with OpenSSLResponder(pki, options=("-badsig",)) as bad:
        leaf = pki.leaf(ocsp_urls=[bad.url])
        await create_secret(api, namespace, "sig", pki, leaf, annotations=ENABLED)
        await wait_for(lambda: _has_event(api, namespace, "sig", "VerificationFailed"))
    events = [
        e for e in await events_for(api, namespace, "sig") if e["reason"] == "VerificationFailed"
    ]
    assert events[0]["type"] == "Warning"
    assert "SignatureInvalid" in events[0]["message"]
    assert await staple_of(api, namespace, "sig") is None
    obj = await wait_for(lambda: status_with(api, namespace, "sig", "lastError"))
    assert obj["status"]["conditions"][0]["status"] == "False"
    assert "SignatureInvalid" in obj["status"]["lastError"]


async def test_a_secret_whose_writes_are_refused_says_so(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    """An immutable Secret (or an admission policy) refuses every write: the OCSPStaple is
    Ready=False WriteRefused, one Warning Event names it, the metric says Error."""
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    body = tls_secret("frozen", namespace, crt=pki.chain_pem(leaf), key=leaf.key_pem,
                      annotations=ENABLED)  # fmt: skip
    await api.create(secret_path(namespace), {**body, "immutable": True})

    async def refused() -> dict[str, Any] | None:
        obj = await status_with(api, namespace, "frozen", "conditions")
        ready = obj["status"]["conditions"][0] if obj else None
        return obj if ready and ready["reason"] == "WriteRefused" else None

    obj = await wait_for(refused, what="Ready=False WriteRefused")
    ready = obj["status"]["conditions"][0]
    assert ready["status"] == "False"
    assert "refused" in ready["message"]
    events = [
        e for e in await events_for(api, namespace, "frozen") if e["reason"] == "WriteRefused"
    ]
    assert len(events) == 1
    assert events[0]["type"] == "Warning"
    labels = {"namespace": namespace, "secret": "frozen", "status": "Error"}
    reg = op.reconciler.metrics.registry
    assert reg.get_sample_value("ocsp_stapler_certificate_status", labels) == 1
    assert await staple_of(api, namespace, "frozen") is None
