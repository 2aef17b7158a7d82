"""Tenant isolation: one tenant's Secret never stops the shared ingress serving the others.

The decision tests feed ``SnapshotBuilder.build`` hostile Secrets next to a healthy one,
without a cluster; a hypothesis test builds structured hostile Secrets (real PEM with the
wrong key, truncated PEM, staples made by cryptography's OCSPResponseBuilder with odd hash
algorithms and random signers); the boundary tests make the parsers themselves raise, so they
do not depend on which parser raises what. Workers are fed hostile snapshot entries, the
supervisor's publish loop a build that raises. End to end, real ingress processes watch two
tenants' namespaces on the real control plane, checked with ``openssl s_client -status``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from devcluster.pki import Issued, TestPKI
from devcluster.responder import OpenSSLResponder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsp_stapler.ingress import snapshots, staples
from ocsp_stapler.ingress.settings import IngressSettings
from ocsp_stapler.ingress.snapshots import (
    CERTIFICATE_INVALID,
    CHECK_FAILED,
    KEY_INVALID,
    KEY_MISMATCH,
    SECRET_UNREADABLE,
    STAPLE_REJECTED,
    SnapshotBuilder,
)
from ocsp_stapler.ingress.supervisor import Supervisor, self_signed_certificate
from ocsp_stapler.ingress.tls import CertificateStore
from ocsp_stapler.ingress.worker import Worker, WorkerSettings
from ocsp_stapler.k8s.client import ApiClient, Credentials
from support.backends import EchoBackend, expose
from support.ingresses import (
    StartIngress,
    events_on_ingress,
    fetch_staple,
    publish,
    s_client,
    staple_in,
)
from support.kube import secret_path, tls_secret, wait_for

UTC = datetime.UTC
CLASSES = {
    "ocsp-stapler": {
        "metadata": {"name": "ocsp-stapler"},
        "spec": {"controller": "ocsp-stapler.dev/ingress"},
    }
}
FALLBACK = self_signed_certificate()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def make_builder(**checks: Any) -> SnapshotBuilder:
    return SnapshotBuilder(
        class_name="ocsp-stapler",
        controller="ocsp-stapler.dev/ingress",
        staple_key="tls.ocsp-staple",
        default_secret="",
        fallback_certificate=FALLBACK,
        clock=now,
        **checks,
    )


def ingress(namespace: str, name: str, host: str, secret: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"},
        "spec": {
            "ingressClassName": "ocsp-stapler",
            "tls": [{"hosts": [host], "secretName": secret}],
            "rules": [{"host": host}],
        },
    }


def rogue_signer(kind: str = "ec") -> Issued:
    """A self-signed responder certificate of no CA's: whatever it signs is not a staple."""
    key: Any
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    else:
        key = ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rogue {kind}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(hours=1))
        .not_valid_after(now() + datetime.timedelta(days=1))
        .sign(key, None if kind == "ed25519" else hashes.SHA256())
    )
    return Issued(cert=cert, key=key)


def odd_staple(
    pki: TestPKI, leaf: Issued, algorithm: hashes.HashAlgorithm, signer: Issued | None = None
) -> bytes:
    """A response about ``leaf`` whose CertID uses ``algorithm``, signed by ``signer``."""
    signer = signer or rogue_signer()
    t = now()
    built = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf.cert,
            issuer=pki.intermediate.cert,
            algorithm=algorithm,
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=t - datetime.timedelta(minutes=1),
            next_update=t + datetime.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        .certificates([signer.cert])
    )
    hash_for_signing = (
        None if isinstance(signer.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    )
    return built.sign(signer.key, hash_for_signing).public_bytes(serialization.Encoding.DER)


class Tenants:
    """A healthy tenant (namespace a, stapled) next to a hostile one (namespace b)."""

    def __init__(self, pki: TestPKI) -> None:
        self.pki = pki
        self.good = pki.leaf("good.example.test")
        self.good_staple = pki.response(
            self.good, this_update=now(), next_update=now() + datetime.timedelta(hours=1)
        )
        self.bad = pki.leaf("bad.example.test")
        self.ingresses = {
            "a/good": ingress("a", "good", "good.example.test", "good-tls"),
            "b/bad": ingress("b", "bad", "bad.example.test", "bad-tls"),
        }

    def good_secret(self) -> dict[str, Any]:
        return {
            "data": {
                "tls.crt": b64(self.pki.chain_pem(self.good)),
                "tls.key": b64(self.good.key_pem),
                "tls.ocsp-staple": b64(self.good_staple),
            }
        }

    def build(self, builder: SnapshotBuilder, hostile: dict[str, Any]) -> dict[str, Any]:
        return builder.build(
            ingresses=self.ingresses,
            classes=CLASSES,
            services={},
            slices={},
            secrets={"a/good-tls": self.good_secret(), "b/bad-tls": {"data": hostile}},
        )

    def assert_healthy(self, snapshot: dict[str, Any]) -> None:
        good = snapshot["certs"]["a/good-tls"]
        assert good["staple"] == self.good_staple.hex()
        assert good["hosts"] == ["good.example.test"]


@pytest.fixture(scope="module")
def tenants(pki: TestPKI) -> Tenants:
    return Tenants(pki)


# ---------------------------------------------------------------- the builder's decisions


def _hostile_cases(t: Tenants) -> dict[str, tuple[dict[str, Any], str, bool]]:
    """name -> (Secret data, the reason expected, whether the host is still served)."""
    pki, bad = t.pki, t.bad
    chain, key = b64(pki.chain_pem(bad)), b64(bad.key_pem)
    encrypted = bad.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return {
        "sha224 certid staple": (
            {"tls.crt": chain, "tls.key": key, "tls.ocsp-staple": b64(odd_staple(pki, bad, hashes.SHA224()))},
            STAPLE_REJECTED, True,
        ),
        "staple of random bytes": (
            {"tls.crt": chain, "tls.key": key, "tls.ocsp-staple": b64(os.urandom(512))},
            STAPLE_REJECTED, True,
        ),
        "staple not base64": (
            {"tls.crt": chain, "tls.key": key, "tls.ocsp-staple": "%%%"}, STAPLE_REJECTED, True,
        ),
        "staple not a string": (
            {"tls.crt": chain, "tls.key": key, "tls.ocsp-staple": 42}, STAPLE_REJECTED, True,
        ),
        "garbage key": ({"tls.crt": chain, "tls.key": b64(b"garbage")}, KEY_INVALID, False),
        "encrypted key": ({"tls.crt": chain, "tls.key": b64(encrypted)}, KEY_INVALID, False),
        "huge key": ({"tls.crt": chain, "tls.key": b64(b"A" * 300_000)}, KEY_INVALID, False),
        "mismatched key": (
            {"tls.crt": chain, "tls.key": b64(t.good.key_pem)}, KEY_MISMATCH, False,
        ),
        "garbage certificate": ({"tls.crt": b64(b"garbage"), "tls.key": key}, CERTIFICATE_INVALID, False),
        "truncated certificate": (
            {"tls.crt": b64(pki.chain_pem(bad)[:300]), "tls.key": key}, CERTIFICATE_INVALID, False,
        ),
        "DER, not PEM": (
            {"tls.crt": b64(bad.cert.public_bytes(serialization.Encoding.DER)), "tls.key": key},
            CERTIFICATE_INVALID, False,
        ),
        "CA-only bundle": (
            {"tls.crt": b64(pki.intermediate.pem + pki.root.pem), "tls.key": b64(pki.intermediate.key_pem)},
            CERTIFICATE_INVALID, False,
        ),
        "huge certificate": (
            {"tls.crt": b64(pki.chain_pem(bad) * 200), "tls.key": key}, CERTIFICATE_INVALID, False,
        ),
        "undecodable base64": ({"tls.crt": "!!not base64!!", "tls.key": key}, SECRET_UNREADABLE, False),
        "non-string values": ({"tls.crt": 5, "tls.key": ["x"]}, SECRET_UNREADABLE, False),
        "no key": ({"tls.crt": chain}, SECRET_UNREADABLE, False),
    }  # fmt: skip


CASE_NAMES = [
    "sha224 certid staple", "staple of random bytes", "staple not base64", "staple not a string",
    "garbage key", "encrypted key", "huge key", "mismatched key", "garbage certificate",
    "truncated certificate", "DER, not PEM", "CA-only bundle", "huge certificate",
    "undecodable base64", "non-string values", "no key",
]  # fmt: skip


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_hostile_secret_is_skipped_and_the_healthy_one_served(
    tenants: Tenants, case: str
) -> None:
    data, reason, served = _hostile_cases(tenants)[case]
    builder = make_builder()
    snapshot = tenants.build(builder, data)
    tenants.assert_healthy(snapshot)
    assert "a/good-tls" not in builder.problems
    problem = builder.problems["b/bad-tls"]
    assert (problem.reason, problem.served) == (reason, served), problem
    bad = snapshot["certs"].get("b/bad-tls")
    if served:
        assert bad is not None
        assert bad["staple"] is None
    else:
        assert bad is None  # not served: the default certificate answers for it
    # The Ingress naming the Secret is known, for its Warning Event.
    assert [r["name"] for r in builder.referrers["b/bad-tls"]] == ["bad"]
    # And the workers load what the builder published, every entry.
    assert CertificateStore().apply(snapshot["certs"], snapshot["default"]) == []


def test_a_verdict_is_reached_once_per_secret_version(tenants: Tenants) -> None:
    data, _, _ = _hostile_cases(tenants)["mismatched key"]
    calls: list[int] = []
    real = snapshots.load_pair

    def counting(chain: bytes, key: bytes) -> tuple[str, str]:
        calls.append(1)
        return real(chain, key)

    builder = make_builder(load_pair=counting)
    for _ in range(3):
        tenants.build(builder, data)
    assert len(calls) == 2  # the good Secret and the bad one, once each
    first = builder.problems["b/bad-tls"]
    tenants.build(builder, {**data, "tls.key": b64(b"other garbage")})
    assert builder.problems["b/bad-tls"].digest != first.digest  # a new version: a new problem


# ------------------------------------------------------ the boundary, whatever raises


def test_the_builder_holds_whatever_the_staple_check_raises(tenants: Tenants) -> None:
    """Independent of which parser raises what: here the staple verifier itself raises."""
    real = staples.servable_staple

    def exploding(der: bytes | None, chain: bytes, **context: Any) -> Any:
        if b"bad.example.test" in chain or tenants.bad.pem in chain:
            raise RuntimeError("a parser bug")
        return real(der, chain, **context)

    data, _, _ = _hostile_cases(tenants)["staple of random bytes"]
    builder = make_builder(check_staple=exploding)
    snapshot = tenants.build(builder, data)
    tenants.assert_healthy(snapshot)
    assert snapshot["certs"]["b/bad-tls"]["staple"] is None
    assert builder.problems["b/bad-tls"].reason == STAPLE_REJECTED


def test_the_builder_holds_whatever_checking_a_secret_raises(tenants: Tenants) -> None:
    real = snapshots.load_pair

    def exploding(chain: bytes, key: bytes) -> tuple[str, str]:
        if tenants.bad.pem in chain:
            raise ValueError("unsupported CertID hash 'sha224'")  # what cert_id_in raised
        return real(chain, key)

    data, _, _ = _hostile_cases(tenants)["sha224 certid staple"]
    builder = make_builder(load_pair=exploding)
    snapshot = tenants.build(builder, data)
    tenants.assert_healthy(snapshot)
    assert "b/bad-tls" not in snapshot["certs"]
    assert builder.problems["b/bad-tls"].reason == CHECK_FAILED


# ----------------------------------------------------------------- hypothesis

_HASHES = [hashes.SHA1(), hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
_SIGNERS: dict[str, Issued] = {}


def _signer(kind: str) -> Issued:
    if kind not in _SIGNERS:
        _SIGNERS[kind] = rogue_signer(kind)
    return _SIGNERS[kind]


@st.composite
def hostile_data(draw: st.DrawFn, t: Tenants) -> dict[str, Any]:
    pki, bad = t.pki, t.bad
    chain = pki.chain_pem(bad)
    crt = draw(
        st.sampled_from(
            ["valid", "truncated", "random", "ca-only", "leaf-only", "not-b64", "absent"]
        )
    )
    crt_value: Any = {
        "valid": b64(chain),
        "truncated": b64(chain[: draw(st.integers(0, len(chain) - 1))]),
        "random": b64(draw(st.binary(max_size=2048))),
        "ca-only": b64(pki.intermediate.pem),
        "leaf-only": b64(bad.pem),
        "not-b64": draw(st.text(max_size=40)) + "!",
        "absent": None,
    }[crt]
    key = draw(st.sampled_from(["own", "other", "truncated", "random", "ca"]))
    key_value = {
        "own": b64(bad.key_pem),
        "other": b64(t.good.key_pem),
        "truncated": b64(bad.key_pem[: draw(st.integers(0, len(bad.key_pem) - 1))]),
        "random": b64(draw(st.binary(max_size=512))),
        "ca": b64(pki.intermediate.key_pem),
    }[key]
    data: dict[str, Any] = {"tls.key": key_value}
    if crt_value is not None:
        data["tls.crt"] = crt_value
    staple = draw(st.sampled_from(["none", "odd", "random", "truncated-odd", "other-leaf"]))
    if staple != "none":
        algorithm = draw(st.sampled_from(_HASHES))
        signer = _signer(draw(st.sampled_from(["ec", "p384", "ed25519", "rsa"])))
        der = odd_staple(pki, t.good if staple == "other-leaf" else bad, algorithm, signer)
        if staple == "random":
            der = draw(st.binary(max_size=1024))
        elif staple == "truncated-odd":
            der = der[: draw(st.integers(0, 4096)) % len(der)]  # DER lengths vary by signature
        data["tls.ocsp-staple"] = b64(der)
    return data


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_build_never_raises_and_healthy_entries_are_unaffected(
    tenants: Tenants, data: st.DataObject
) -> None:
    hostile = data.draw(hostile_data(tenants))
    builder = make_builder()
    snapshot = tenants.build(builder, hostile)
    tenants.assert_healthy(snapshot)
    assert set(builder.problems) <= {"b/bad-tls"}
    bad = snapshot["certs"].get("b/bad-tls")
    if bad is None:
        assert builder.problems["b/bad-tls"].served is False
    else:
        assert bad["staple"] is None  # no hostile staple is ever served
        if hostile.get("tls.ocsp-staple"):  # an empty value is no staple, not a bad one
            assert builder.problems["b/bad-tls"].reason == STAPLE_REJECTED
    assert CertificateStore().apply(snapshot["certs"], snapshot["default"]) == []


# ------------------------------------------------------------------------ workers


def test_a_worker_skips_an_entry_it_cannot_load_and_keeps_the_others(tenants: Tenants) -> None:
    good = make_builder()
    snapshot = tenants.build(good, {})
    certs = dict(snapshot["certs"])
    store = CertificateStore()
    assert store.apply(certs, snapshot["default"]) == []
    held = store.entries["a/good-tls"]
    hostile: dict[str, Any] = {
        "garbage": {"version": "1", "chain": "garbage", "key": "garbage", "hosts": ["x.test"]},
        "mismatch": {
            **certs["a/good-tls"], "version": "2", "key": tenants.bad.key_pem.decode(),
            "hosts": ["y.test"],
        },
        "no-fields": {},
        "not-a-dict": "boo",
        "bad-staple": {**certs["a/good-tls"], "version": "3", "staple": "zz", "hosts": ["z.test"]},
        "bad-hosts": {**certs["a/good-tls"], "version": "4", "hosts": 7},
    }  # fmt: skip
    failed = store.apply({**certs, **hostile}, ["unhashable"])  # type: ignore[arg-type]
    assert set(failed) == {"garbage", "mismatch", "no-fields", "not-a-dict", "bad-hosts"}
    assert store.entries["a/good-tls"] is held  # the same Context, untouched
    assert held.staple.der == tenants.good_staple
    assert store.lookup(b"good.example.test") is held
    assert store.entries["bad-staple"].staple.der == b""  # served, unstapled


async def test_a_worker_survives_any_snapshot(tenants: Tenants) -> None:
    worker = Worker(WorkerSettings())
    snapshot = tenants.build(make_builder(), {})
    worker.apply(snapshot)
    held = worker.store.entries["a/good-tls"]
    table = worker.table
    for message in (
        {"routes": "nonsense", "certs": snapshot["certs"]},
        {"routes": snapshot["routes"], "certs": "nonsense"},
        {"routes": None},
        {"routes": snapshot["routes"], "certs": {**snapshot["certs"], "x": None}, "default": {}},
    ):
        worker.apply(message)
        assert worker.store.entries["a/good-tls"] is held
    assert worker.table is not None
    worker.apply(snapshot)
    assert worker.store.lookup(b"good.example.test") is held
    assert table is not None


# --------------------------------------------------------------- the publish loop


class BrokenBuilder(SnapshotBuilder):
    """A builder that fails as a whole, as a bug outside every per-Secret boundary would."""

    def build(self, **_kw: Any) -> dict[str, Any]:
        raise ValueError("unsupported CertID hash 'sha224'")


async def test_the_publish_loop_survives_a_failing_build() -> None:
    sup = Supervisor(
        IngressSettings(health_port=0), credentials=Credentials(server="https://127.0.0.1:1", ssl_context=False)
    )  # fmt: skip
    sup.retry_delay = 3600.0
    await sup.publish()
    first = sup.snapshot
    assert first is not None
    assert sup.publish_error is None

    working = sup.builder
    sup.builder = BrokenBuilder(
        **{f.name: getattr(working, f.name) for f in dataclasses.fields(working) if f.init}
    )
    await sup.publish()  # does not raise
    await sup.publish()
    assert sup.snapshot is first  # the previous configuration stays
    assert sup.collector.publish_failures["build"] == 2
    assert sup.publish_error is not None
    assert "sha224" in sup.publish_error
    assert sup._retry is not None  # and it tries again
    sup._retry.cancel()
    sup._retry = None

    sup.builder = working
    await sup.publish()
    assert sup.publish_error is None
    assert sup.updates == 1  # the same content as before: nothing new had to be sent


# --------------------------------------------------------------------- end to end


async def _secret(api: ApiClient, namespace: str, name: str, **fields: Any) -> None:
    await api.create(secret_path(namespace), tls_secret(name, namespace, **fields))


async def _warning(
    api: ApiClient, namespace: str, ingress: str, reason: str
) -> dict[str, Any] | None:
    for event in await events_on_ingress(api, namespace, ingress):
        if event["reason"] == reason and event["type"] == "Warning":
            return event
    return None


async def _metric(port_get: Any, needle: str) -> str | None:
    got = await port_get("/metrics")
    return got[1] if got and needle in got[1] else None


async def test_hostile_secrets_do_not_stop_another_tenant(
    api: ApiClient,
    namespace: str,
    other_namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    backend: EchoBackend,
    start: StartIngress,
    tmp_path: Path,
) -> None:
    hostile, tenant = namespace, other_namespace
    await expose(api, hostile, "echo", [backend.port])
    await expose(api, tenant, "echo", [backend.port])

    # Tenant 1, before the ingress starts: a key that is not the certificate's.
    broken = pki.leaf("evil-key.example.test")
    stranger = pki.leaf("stranger.example.test")
    await _secret(api, hostile, "evil-key", crt=pki.chain_pem(broken), key=stranger.key_pem)
    await publish(api, hostile, host="evil-key.example.test", secret="evil-key", service="echo",
                  name="evil-key")  # fmt: skip
    ingress = await start(more_namespaces=(tenant,))  # it becomes ready all the same

    # Then, at run time: a staple whose CertID uses SHA-224, signed by a stranger.
    evil = pki.leaf("evil-staple.example.test", ocsp_urls=[responder.url])
    sha224 = odd_staple(pki, evil, hashes.SHA224())
    await _secret(api, hostile, "evil-staple", crt=pki.chain_pem(evil), key=evil.key_pem,
                  extra={"tls.ocsp-staple": sha224})  # fmt: skip
    await publish(api, hostile, host="evil-staple.example.test", secret="evil-staple",
                  service="echo", name="evil-staple")  # fmt: skip

    # Tenant 2 publishes a new host with a good staple: served, stapled, within a second.
    good = pki.leaf("good.example.test", ocsp_urls=[responder.url])
    der = await fetch_staple(pki, good)
    await _secret(api, tenant, "good-tls", crt=pki.chain_pem(good), key=good.key_pem,
                  extra={"tls.ocsp-staple": der})  # fmt: skip
    loop = asyncio.get_running_loop()
    began = loop.time()
    await publish(api, tenant, host="good.example.test", secret="good-tls", service="echo")

    async def stapled() -> str | None:
        out = await s_client(ingress.https_port, "good.example.test")
        return out if staple_in(out) else None

    out = await wait_for(stapled, timeout=10, what="the other tenant's stapled host")
    elapsed = loop.time() - began
    print(f"the second tenant's host was served stapled {elapsed:.3f} s after its Ingress")
    assert staple_in(out) == "good"
    assert "CN = good.example.test" in out or "CN=good.example.test" in out
    assert elapsed < 1.0

    # The hostile hosts: one served without a staple, one with the default certificate.
    evil_out = await s_client(ingress.https_port, "evil-staple.example.test")
    assert "CN = evil-staple.example.test" in evil_out or "CN=evil-staple.example.test" in evil_out
    assert staple_in(evil_out) is None
    assert "OCSP response: no response sent" in evil_out
    key_out = await s_client(ingress.https_port, "evil-key.example.test")
    assert "ocsp-stapler ingress default certificate" in key_out

    # Each hostile Ingress carries a Warning Event saying why; the metric counts them.
    key_event = await wait_for(lambda: _warning(api, hostile, "evil-key", "KeyMismatch"),
                               what="the KeyMismatch Event")  # fmt: skip
    assert "evil-key" in key_event["message"]
    assert "not served" in key_event["message"]
    staple_event = await wait_for(lambda: _warning(api, hostile, "evil-staple", "StapleRejected"),
                                  what="the StapleRejected Event")  # fmt: skip
    assert "without a staple" in staple_event["message"]
    assert await events_on_ingress(api, tenant, "ing-echo-good.example.test") == []
    text = await wait_for(
        lambda: _metric(
            ingress.get, 'ocsp_stapler_ingress_secret_problems{reason="KeyMismatch"} 1.0'
        ),
        what="the problem metric",
    )
    assert 'ocsp_stapler_ingress_secret_problems{reason="StapleRejected"} 1.0' in text
    got = await ingress.get("/readyz")
    assert got is not None
    assert got[0] == 200

    # Logged once per Secret version, not on every rebuild: more changes, no more lines.
    await publish(api, tenant, host="more.example.test", secret="good-tls", service="echo")
    await wait_for(lambda: _metric(ingress.get, "ocsp_stapler_ingress_secret_problems"),
                   what="metrics")  # fmt: skip
    await asyncio.sleep(0.5)
    log = ingress.log.read_text()
    assert log.count("Secret " + f"{hostile}/evil-key: KeyMismatch") == 1, log[-3000:]
    assert len([e for e in await events_on_ingress(api, hostile, "evil-key")
                if e["reason"] == "KeyMismatch"]) == 1  # fmt: skip
