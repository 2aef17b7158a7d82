"""Real CA responses from the cryptography-vectors package, verified as of their own time."""

from __future__ import annotations

import datetime
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import (
    CertStatus,
    Signer,
    parse_response,
    verify_response,
    verify_signature,
)

VECTORS = Path(cryptography_vectors.__file__).parent / "x509"


def der(name: str) -> bytes:
    return (VECTORS / "ocsp" / name).read_bytes()


def pem_cert(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((VECTORS / name).read_bytes())


def test_lets_encrypt_response_verifies_against_its_issuer_at_its_own_time() -> None:
    issuer = pem_cert("letsencryptx3.pem")
    raw = der("resp-sha256.der")
    resp = ocsp.load_der_ocsp_response(raw)
    cert_id = CertID.for_serial(issuer, resp.serial_number)
    staple = verify_response(raw, cert_id=cert_id, issuer=issuer, now=resp.produced_at_utc)
    assert staple.status is CertStatus.GOOD
    assert staple.signer is Signer.ISSUER
    assert staple.this_update == datetime.datetime(2018, 8, 30, 11, 0, tzinfo=datetime.UTC)
    assert staple.next_update == datetime.datetime(2018, 9, 6, 11, 0, tzinfo=datetime.UTC)


def test_the_same_response_is_expired_today() -> None:
    issuer = pem_cert("letsencryptx3.pem")
    raw = der("resp-sha256.der")
    cert_id = CertID.for_serial(issuer, ocsp.load_der_ocsp_response(raw).serial_number)
    with pytest.raises(errors.Expired):
        verify_response(
            raw, cert_id=cert_id, issuer=issuer, now=datetime.datetime.now(datetime.UTC)
        )


def test_it_does_not_answer_for_another_serial() -> None:
    issuer = pem_cert("letsencryptx3.pem")
    raw = der("resp-sha256.der")
    resp = ocsp.load_der_ocsp_response(raw)
    with pytest.raises(errors.CertIDMismatch):
        verify_response(
            raw,
            cert_id=CertID.for_serial(issuer, resp.serial_number + 1),
            issuer=issuer,
            now=resp.produced_at_utc,
        )


def test_it_is_not_signed_by_another_ca() -> None:
    """A response checked against the wrong issuer fails on the CertID's key hash first."""
    other = pem_cert("rapidssl_sha256_ca_g3.pem")
    raw = der("resp-sha256.der")
    resp = ocsp.load_der_ocsp_response(raw)
    with pytest.raises(errors.CertIDMismatch):
        verify_response(
            raw,
            cert_id=CertID.for_serial(other, resp.serial_number),
            issuer=other,
            now=resp.produced_at_utc,
        )


def test_invalid_version_fails() -> None:
    with pytest.raises(errors.ResponseMalformed):
        parse_response(der("resp-invalid-version.der"))


def test_unauthorized_is_a_named_responder_error() -> None:
    with pytest.raises(errors.ResponderError, match="unauthorized"):
        parse_response(der("resp-unauthorized.der"))


@pytest.mark.parametrize("name", ["resp-revoked-reason.der", "resp-sct-extension.der"])
def test_delegated_signer_responses_verify_their_embedded_signer(name: str) -> None:
    resp = parse_response(der(name))
    (signer,) = resp.certificates
    assert resp.responder_name == signer.subject
    assert (
        x509.ExtendedKeyUsageOID.OCSP_SIGNING
        in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    verify_signature(resp, signer)  # raises when the signature does not verify


def test_a_tampered_response_fails_its_embedded_signers_signature() -> None:
    """resp-unknown-extension.der is resp-revoked-reason.der with an extension added after
    signing: the same signer, a signature that no longer covers the bytes."""
    resp = parse_response(der("resp-unknown-extension.der"))
    with pytest.raises(errors.SignatureInvalid):
        verify_signature(resp, resp.certificates[0])


def test_delegated_signer_is_not_accepted_for_an_issuer_that_did_not_sign_it() -> None:
    """QuoVadis' delegated signer cannot speak for Let's Encrypt, however valid its signature."""
    raw = der("resp-revoked-reason.der")
    resp = ocsp.load_der_ocsp_response(raw)
    le = pem_cert("letsencryptx3.pem")
    # Build a CertID that matches the response, so only the signer check can fail.
    cert_id = CertID(
        hash_algorithm=resp.hash_algorithm.name,
        issuer_name_hash=resp.issuer_name_hash,
        issuer_key_hash=resp.issuer_key_hash,
        serial_number=resp.serial_number,
    )
    with pytest.raises(errors.SignerUnauthorized, match="not issued by the certificate's issuer"):
        verify_response(raw, cert_id=cert_id, issuer=le, now=resp.produced_at_utc)


def test_revoked_reason_is_read() -> None:
    resp = parse_response(der("resp-revoked-reason.der"))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_reason is x509.ReasonFlags.superseded
