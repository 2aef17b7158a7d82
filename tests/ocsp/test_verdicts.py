"""Every response is a verdict: a structure-aware property test of ``verify_response``.

Responses are built field by field (``support.ocsp_der``) across every CertID hash
cryptography knows and some it does not, reason codes 0-10 and beyond, several answers in
mixed hashes, signers of every kind (the issuer by key and by name, proper and improper
delegates, decoys, strangers), weak and unknown signature algorithms, and times around the
validity edges. For each one an independent model says what the verdict must be; the test
asserts that the verifier agrees, that nothing but ``OCSPError`` ever leaves it, and that an
answer saying revoked is never reported as anything else.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.queries import CERTID_HASHES, CertID
from ocsp_stapler.ocsp.responses import CertStatus, VerifyPolicy, verify_response
from support.ocsp_der import HASH_OIDS, NONCE_OID, Answer, Extension, ResponseSpec, SignerKey

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
SKEW = VerifyPolicy().skew
LEAF_SERIAL = 0x1234ABCD


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: SignerKey,
    *,
    issuer_name: str,
    issuer_key: SignerKey,
    ca: bool = False,
    eku: bool = True,
    key_usage: bool | None = True,
    critical_unknown: bool = False,
    days: tuple[int, int] = (-30, 30),
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    if key_usage is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=key_usage,
                content_commitment=False,
                key_encipherment=not key_usage,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
            critical=True,
        )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


@dataclass(frozen=True)
class Signer:
    """Who signs, what the response carries, and whether a correct verifier must accept it."""

    key: SignerKey
    responder: x509.Certificate
    carried: tuple[x509.Certificate, ...]
    authorized: bool


class PKI:
    def __init__(self) -> None:
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = _cert(
            "Verdict CA",
            self.ca_key,
            issuer_name="Verdict CA",
            issuer_key=self.ca_key,
            ca=True,
            eku=False,
        )
        other_key = ec.generate_private_key(ec.SECP256R1())
        self.other_ca = _cert(
            "Other CA", other_key, issuer_name="Other CA", issuer_key=other_key, ca=True, eku=False
        )
        self.other_ca_key = other_key

        def delegate(
            name: str, key: SignerKey | None = None, **kw: object
        ) -> tuple[SignerKey, x509.Certificate]:
            k = key or ec.generate_private_key(ec.SECP256R1())
            issuer_key = kw.pop("issuer_key", self.ca_key)
            issuer_name = kw.pop("issuer_name", "Verdict CA")
            return k, _cert(name, k, issuer_name=issuer_name, issuer_key=issuer_key, **kw)  # type: ignore[arg-type]

        good_key, good = delegate("Responder")
        ed_key, ed = delegate("Ed Responder", ed25519.Ed25519PrivateKey.generate())
        decoy_key, decoy = delegate("Responder", issuer_key=other_key, issuer_name="Verdict CA")
        bad = {
            "ca_delegate": delegate("CA Responder", ca=True),
            "no_digital_signature": delegate("KU Responder", key_usage=False),
            "critical_unknown": delegate("Crit Responder", critical_unknown=True),
            "no_eku": delegate("NoEKU Responder", eku=False),
            "expired": delegate("Old Responder", days=(-60, -1)),
            "foreign": delegate("Foreign Responder", issuer_key=other_key, issuer_name="Other CA"),
        }
        stranger_key = ec.generate_private_key(ec.SECP256R1())
        stranger = _cert(
            "Verdict CA", stranger_key, issuer_name="Verdict CA", issuer_key=stranger_key, ca=True
        )
        self.signers: dict[str, Signer] = {
            "issuer": Signer(self.ca_key, self.ca, (), True),
            "delegate": Signer(good_key, good, (good,), True),
            "ed25519_delegate": Signer(ed_key, ed, (ed,), True),
            # A same-name certificate listed before the real signer: the real one must win.
            "decoy_then_delegate": Signer(good_key, good, (decoy, good), True),
            "decoy_alone": Signer(good_key, good, (decoy,), False),
            "stranger_claiming_issuer_name": Signer(stranger_key, stranger, (stranger,), False),
            **{name: Signer(k, c, (c,), False) for name, (k, c) in bad.items()},
        }
        del decoy_key


@pytest.fixture
def pki() -> PKI:
    return _pki()


_PKI: PKI | None = None


def _pki() -> PKI:
    global _PKI  # noqa: PLW0603 - keys are slow to make; one set serves every example
    if _PKI is None:
        _PKI = PKI()
    return _PKI


def _offset(low: int, high: int) -> st.SearchStrategy[datetime.timedelta]:
    return st.integers(min_value=low, max_value=high).map(lambda m: datetime.timedelta(minutes=m))


# Mostly plausible times, with the edges (the skew, expiry, inverted validity) well covered.
past = _offset(-60 * 24 * 3, 0)
around_now = _offset(-10, 10)
far = _offset(-60 * 24 * 30, 60 * 24 * 30)
this_updates = st.one_of(past, past, past, around_now, far)
validities = st.one_of(_offset(60, 60 * 24 * 7), _offset(60, 60 * 24 * 7), _offset(-60, 60), far)
accepted_hashes = st.sampled_from(CERTID_HASHES)
any_hash = st.sampled_from(sorted(HASH_OIDS))


# Extensions real responses carry (nonce, CRL reference, archive cutoff, SCTs) and one nobody
# knows, each critical or not: only a critical one we do not process must refuse the answer.
KNOWN_EXTENSION_OIDS = [
    NONCE_OID,
    "1.3.6.1.5.5.7.48.1.3",
    "1.3.6.1.5.5.7.48.1.6",
    "1.3.6.1.4.1.11129.2.4.5",
    "1.2.3.4.5.6.7.8",
]
extension_lists = st.lists(
    st.builds(Extension, oid=st.sampled_from(KNOWN_EXTENSION_OIDS), critical=st.booleans()),
    max_size=2,
    unique_by=lambda e: e.oid,
)


@st.composite
def answers(draw: st.DrawFn, *, ours: bool) -> Answer:
    pki = _pki()
    this_update = NOW + draw(this_updates)
    next_update = draw(st.none() | validities.map(lambda d: this_update + d))
    hash_name = draw(st.one_of(accepted_hashes, accepted_hashes, any_hash))
    return Answer(
        serial=LEAF_SERIAL if ours else draw(st.integers(1, 2**64)),
        issuer=pki.ca if ours or draw(st.booleans()) else pki.other_ca,
        hash_name=hash_name,
        status=draw(st.sampled_from(["good", "revoked", "unknown"])),
        this_update=this_update,
        next_update=next_update,
        revocation_time=this_update - datetime.timedelta(hours=1),
        reason=draw(st.none() | st.integers(0, 10) | st.integers(11, 300)),
        extensions=draw(extension_lists),
    )


@st.composite
def responses(draw: st.DrawFn) -> tuple[ResponseSpec, str]:
    pki = _pki()
    mine = draw(
        st.lists(answers(ours=True), min_size=0, max_size=2)
        | st.builds(list, st.tuples(answers(ours=True)))
    )
    others = draw(st.lists(answers(ours=False), min_size=0, max_size=3))
    mixed = draw(st.permutations(mine + others)) if mine or others else []
    authorized = sorted(n for n, s in pki.signers.items() if s.authorized)
    signer_name = draw(st.sampled_from(authorized) | st.sampled_from(sorted(pki.signers)))
    signer = pki.signers[signer_name]
    is_rsa = isinstance(signer.key, rsa.RSAPrivateKey)
    is_ed = isinstance(signer.key, ed25519.Ed25519PrivateKey)
    if is_ed:
        signature_hash = None
    else:
        signature_hash = draw(
            st.sampled_from(["md5", "sha1", "sha256"] if is_rsa else ["sha1", "sha256", "sha384"])
        )
    spec = ResponseSpec(
        answers=mixed,
        key=signer.key,
        responder=signer.responder,
        by_name=draw(st.booleans()),
        produced_at=NOW + draw(st.one_of(past, around_now, far)),
        signature_hash=signature_hash,
        signature_oid=draw(st.sampled_from([None, None, None, "1.2.3.4.99"]))
        if not is_ed
        else None,
        certs=signer.carried,
        extensions=draw(extension_lists),
    )
    return spec, signer_name


def _our_answer(spec: ResponseSpec) -> Answer | None:
    """The answer a correct verifier takes as ours: the only one in an accepted hash, or a
    revoked one among several (a revocation is never hidden)."""
    pki = _pki()
    ours = [
        a
        for a in spec.answers
        if a.serial == LEAF_SERIAL and a.issuer is pki.ca and a.hash_name in CERTID_HASHES
    ]
    revoked = [a for a in ours if a.status == "revoked"]
    if len(ours) > 1 and revoked:
        return revoked[0]
    return ours[0] if len(ours) == 1 else None


def _expiry(answer: Answer, spec: ResponseSpec, policy: VerifyPolicy) -> datetime.datetime | None:
    """When the answer stops being usable, or None when its times make it unusable now."""
    assert answer.this_update is not None
    assert spec.produced_at is not None
    if answer.this_update > NOW + policy.skew or spec.produced_at > NOW + policy.skew:
        return None
    if answer.next_update is None:
        return None if policy.require_next_update else answer.this_update + policy.assumed_validity
    return None if answer.next_update < answer.this_update else answer.next_update


def expected(spec: ResponseSpec, signer_name: str, policy: VerifyPolicy) -> CertStatus | None:
    """The model: the status a correct verifier reports, or None when it must refuse."""
    chosen = _our_answer(spec)
    signed_well = spec.signature_hash != "md5" and spec.signature_oid is None
    if chosen is None or not signed_well or not _pki().signers[signer_name].authorized:
        return None
    critical = [e.oid for e in spec.extensions if e.critical and e.oid != NONCE_OID]
    if critical or any(e.critical for e in chosen.extensions):
        return None  # only the nonce is processed; any other critical extension refuses
    expires = _expiry(chosen, spec, policy)
    if expires is None or expires <= NOW:
        return None
    return CertStatus(chosen.status)


def _verdict(der: bytes, policy: VerifyPolicy) -> CertStatus | OCSPError:
    pki = _pki()
    try:
        staple = verify_response(
            der,
            cert_id=CertID.for_serial(pki.ca, LEAF_SERIAL),
            issuer=pki.ca,
            now=NOW,
            policy=policy,
        )
    except OCSPError as exc:
        return exc
    return staple.status


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=responses(), require_next_update=st.booleans())
def test_every_response_gets_the_verdict_the_model_gives(
    case: tuple[ResponseSpec, str], require_next_update: bool
) -> None:
    spec, signer_name = case
    policy = VerifyPolicy(require_next_update=require_next_update)
    want = expected(spec, signer_name, policy)
    got = _verdict(spec.der(NOW), policy)
    event(f"verdict: {got if isinstance(got, CertStatus) else type(got).__name__}")
    if want is None:
        assert isinstance(got, OCSPError), f"verified as {got}, the model says refuse"
    else:
        assert got == want, f"got {got}, the model says {want}"


@pytest.mark.parametrize("code", [*range(11), 11, 42, 255])
def test_a_revoked_answer_reads_revoked_whatever_its_reason(code: int, pki: PKI) -> None:
    spec = ResponseSpec(
        answers=[
            Answer(
                serial=LEAF_SERIAL,
                issuer=pki.ca,
                status="revoked",
                reason=code,
                this_update=NOW,
                next_update=NOW + datetime.timedelta(days=1),
            )
        ],
        key=pki.ca_key,
        responder=pki.ca,
    )
    staple = verify_response(
        spec.der(NOW), cert_id=CertID.for_serial(pki.ca, LEAF_SERIAL), issuer=pki.ca, now=NOW
    )
    assert staple.status is CertStatus.REVOKED
    assert staple.revocation_reason_code == code
    # 7 is unused in RFC 5280 and nothing above 10 is defined: no name, the number stays.
    assert (staple.revocation_reason is None) == (code == 7 or code > 10)


def _valid_answer(pki: PKI, **changes: object) -> Answer:
    fields: dict[str, object] = {
        "serial": LEAF_SERIAL,
        "issuer": pki.ca,
        "this_update": NOW - datetime.timedelta(hours=1),
        "next_update": NOW + datetime.timedelta(days=1),
        **changes,
    }
    return Answer(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("signer_name", sorted(_pki().signers))
def test_each_signer_kind_on_an_otherwise_valid_response(signer_name: str, pki: PKI) -> None:
    signer = pki.signers[signer_name]
    spec = ResponseSpec(
        answers=[_valid_answer(pki)],
        key=signer.key,
        responder=signer.responder,
        certs=signer.carried,
        signature_hash=None if isinstance(signer.key, ed25519.Ed25519PrivateKey) else "sha256",
        produced_at=NOW,
    )
    got = _verdict(spec.der(NOW), VerifyPolicy())
    assert (got is CertStatus.GOOD) == signer.authorized, got


@pytest.mark.parametrize(
    ("case", "changes", "spec_changes"),
    [
        ("md5 signature", {}, {"signature_hash": "md5"}),
        ("sha1 signature stays accepted", {}, {"signature_hash": "sha1"}),
        ("producedAt beyond the skew", {}, {"produced_at": NOW + SKEW * 2}),
        ("producedAt within the skew is accepted", {}, {"produced_at": NOW + SKEW / 2}),
        (
            "nextUpdate before thisUpdate, thisUpdate inside the skew",
            {"this_update": NOW + SKEW / 2, "next_update": NOW + SKEW / 4},
            {},
        ),
        ("an MD5 CertID names nobody", {"hash_name": "md5"}, {}),
        ("a SHA-224 CertID is ours", {"hash_name": "sha224"}, {}),
        ("a SHA3 CertID names nobody", {"hash_name": "sha3_256"}, {}),
    ],
)
def test_edges_the_property_rarely_draws(
    case: str, changes: dict[str, object], spec_changes: dict[str, object], pki: PKI
) -> None:
    spec = ResponseSpec(
        answers=[_valid_answer(pki, **changes)],
        key=pki.ca_key,
        responder=pki.ca,
        **{"produced_at": NOW, **spec_changes},  # type: ignore[arg-type]
    )
    want = expected(spec, "issuer", VerifyPolicy())
    assert (want is CertStatus.GOOD) == ("accepted" in case or "is ours" in case), case
    got = _verdict(spec.der(NOW), VerifyPolicy())
    assert got == want if want is not None else isinstance(got, OCSPError), (case, got)


UNKNOWN_OID = "1.2.3.4.5.6.7.8"


@pytest.mark.parametrize(
    ("case", "response_extensions", "ours", "other"),
    [
        ("a critical nonce is processed: accepted", [Extension(NONCE_OID, True)], [], []),
        ("a non-critical unknown is ignored: accepted", [Extension(UNKNOWN_OID)], [], []),
        ("a critical unknown response extension", [Extension(UNKNOWN_OID, True)], [], []),
        ("a critical unknown in our answer", [], [Extension(UNKNOWN_OID, True)], []),
        (
            "a critical nonce in our answer means nothing there",
            [],
            [Extension(NONCE_OID, True)],
            [],
        ),
        (
            "a critical unknown in another certificate's answer: accepted",
            [],
            [],
            [Extension(UNKNOWN_OID, True)],
        ),
    ],
)
def test_critical_extensions(
    case: str,
    response_extensions: list[Extension],
    ours: list[Extension],
    other: list[Extension],
    pki: PKI,
) -> None:
    """Our answer second, so its singleExtensions are ones cryptography never exposes."""
    spec = ResponseSpec(
        answers=[
            _valid_answer(pki, serial=LEAF_SERIAL + 1, extensions=other),
            _valid_answer(pki, extensions=ours),
        ],
        key=pki.ca_key,
        responder=pki.ca,
        produced_at=NOW,
        extensions=response_extensions,
    )
    want = expected(spec, "issuer", VerifyPolicy())
    assert (want is CertStatus.GOOD) == ("accepted" in case), case
    got = _verdict(spec.der(NOW), VerifyPolicy())
    if want is None:
        assert isinstance(got, errors.ResponseMalformed), (case, got)
        assert "critical extensions we do not process" in got.message
        assert (NONCE_OID if "nonce" in case else UNKNOWN_OID) in got.message
    else:
        assert got is want, (case, got)


def test_answers_in_mixed_hashes_each_read_in_their_own(pki: PKI) -> None:
    """Another certificate answered in SHA-256 first, ours in SHA-1 after it."""
    spec = ResponseSpec(
        answers=[
            _valid_answer(pki, serial=LEAF_SERIAL + 1, hash_name="sha256"),
            _valid_answer(pki, hash_name="sha1", status="revoked", reason=1),
        ],
        key=pki.ca_key,
        responder=pki.ca,
        produced_at=NOW,
    )
    assert _verdict(spec.der(NOW), VerifyPolicy()) is CertStatus.REVOKED


X400_SAN = x509.UnrecognizedExtension(
    x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME, bytes.fromhex("3002a300")
)
"""A SAN holding an x400Address: cryptography raises UnsupportedGeneralNameType (a plain
Exception, not a ValueError) when the extensions are read."""


def _with_x400_san(
    subject: str, issuer_key: SignerKey, *, issuer_name: str
) -> tuple[SignerKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(X400_SAN, critical=False)
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return key, cert


def test_an_unreadable_delegate_is_refused_and_the_next_candidate_tried(pki: PKI) -> None:
    odd_key, odd = _with_x400_san("Responder", pki.ca_key, issuer_name="Verdict CA")
    good = pki.signers["delegate"]
    for carried, key, want in [
        ((odd,), odd_key, None),
        ((odd, good.responder), good.key, CertStatus.REVOKED),
    ]:
        spec = ResponseSpec(
            answers=[_valid_answer(pki, status="revoked", reason=1)],
            key=key,
            responder=good.responder if key is good.key else odd,
            certs=carried,
            produced_at=NOW,
        )
        got = _verdict(spec.der(NOW), VerifyPolicy())
        if want is None:
            assert isinstance(got, OCSPError), got
        else:
            assert got is want


def test_an_unreadable_certificate_is_a_chain_verdict(pki: PKI) -> None:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from ocsp_stapler.ocsp.chains import assemble_chain  # noqa: PLC0415
    from ocsp_stapler.ocsp.errors import ChainInvalid  # noqa: PLC0415

    _, leaf = _with_x400_san("leaf.example.test", pki.ca_key, issuer_name="Verdict CA")
    with pytest.raises(ChainInvalid):
        assemble_chain(leaf.public_bytes(serialization.Encoding.PEM))


def test_a_delegate_that_never_expires(pki: PKI) -> None:
    """99991231235959Z is RFC 5280's "no well-defined expiration": adding the clock skew to
    it must not overflow into a refusal (or a crash)."""
    key = ec.generate_private_key(ec.SECP256R1())
    forever = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
    delegate = _cert(
        "Forever Responder", key, issuer_name="Verdict CA", issuer_key=pki.ca_key, not_after=forever
    )
    spec = ResponseSpec(
        answers=[_valid_answer(pki)],
        key=key,
        responder=delegate,
        certs=(delegate,),
        produced_at=NOW,
    )
    assert _verdict(spec.der(NOW), VerifyPolicy()) is CertStatus.GOOD
