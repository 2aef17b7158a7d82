"""Verifying an OCSP response: nothing is trusted until every check here has passed.

The checks, in order (each failure is its own ``OCSPError`` subclass):

1. the DER parses as an OCSP response, and responseStatus is ``successful``;
2. it holds exactly one SingleResponse whose CertID (hash algorithm, issuer name hash, issuer
   key hash, serial) is ours;
3. it is signed by the issuer itself, or by a delegated responder certificate carried in the
   response that the issuer signed directly, that carries id-kp-OCSPSigning, and that is valid
   now (RFC 6960 4.2.2.2);
4. thisUpdate is not in the future (beyond ``skew``), nextUpdate is present (unless the policy
   allows its absence) and in the future;
5. it is not older than the response already held (never go backwards).

nginx checks fewer of these, Envoy none but expiry, Caddy skips the CertID. A response that
fails here is never written into a Secret and never served.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ocsp_stapler.ocsp.chains import signed_by
from ocsp_stapler.ocsp.errors import (
    CertIDMismatch,
    Expired,
    NoNextUpdate,
    NotYetValid,
    ResponderError,
    ResponseMalformed,
    SignatureInvalid,
    SignerUnauthorized,
    Stale,
)
from ocsp_stapler.ocsp.queries import CertID, public_key_bits

MAX_RESPONSE_BYTES = 64 * 1024


class CertStatus(enum.StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class Signer(enum.StrEnum):
    ISSUER = "issuer"
    DELEGATED = "delegated"


@dataclass(frozen=True)
class VerifyPolicy:
    """How strict verification is. The defaults are the strict ones."""

    skew: datetime.timedelta = datetime.timedelta(minutes=5)
    """Clock difference tolerated on thisUpdate (future) and on a delegated signer's validity."""
    require_next_update: bool = True
    """Reject responses without nextUpdate (RFC 6960: "newer information is always available")."""
    assumed_validity: datetime.timedelta = datetime.timedelta(hours=1)
    """When nextUpdate is absent and allowed: how long after thisUpdate the response is used."""


@dataclass(frozen=True)
class Staple:
    """A verified OCSP response for one certificate, and what it says."""

    der: bytes
    status: CertStatus
    serial_number: int
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    produced_at: datetime.datetime
    signer: Signer
    expires_at: datetime.datetime
    """nextUpdate, or thisUpdate + assumed validity when the policy allowed its absence."""
    revocation_time: datetime.datetime | None = None
    revocation_reason: str | None = None

    def valid_at(self, now: datetime.datetime) -> bool:
        return self.expires_at > now


_STATUS = {
    ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
    ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
    ocsp.OCSPCertStatus.UNKNOWN: CertStatus.UNKNOWN,
}

_RESPONDER_STATUS_NAMES = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}


def parse_response(der: bytes) -> ocsp.OCSPResponse:
    """Parse and require responseStatus successful."""
    if len(der) > MAX_RESPONSE_BYTES:
        raise ResponseMalformed(f"response is {len(der)} bytes, more than {MAX_RESPONSE_BYTES}")
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise ResponseMalformed(f"not an OCSP response: {exc}") from None
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise ResponderError(_RESPONDER_STATUS_NAMES.get(resp.response_status, "unknown status"))
    return resp


def _single_for(resp: ocsp.OCSPResponse, cert_id: CertID) -> ocsp.OCSPSingleResponse:
    try:
        singles = list(resp.responses)
    except ValueError as exc:
        raise ResponseMalformed(f"unreadable SingleResponses: {exc}") from None
    matching = [s for s in singles if cert_id.matches(s)]
    if len(matching) != 1:
        serials = ", ".join(format(s.serial_number, "X") for s in singles[:4]) or "none"
        raise CertIDMismatch(
            f"expected exactly one answer for serial {cert_id.serial_number:X} "
            f"({cert_id.hash_algorithm}), found {len(matching)} among {len(singles)} "
            f"(serials: {serials})"
        )
    return matching[0]


def _names_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    """Whether the ResponderID (byName or byKey) designates ``cert``."""
    if resp.responder_key_hash is not None:
        return bool(resp.responder_key_hash == hashlib.sha1(public_key_bits(cert)).digest())  # noqa: S324
    return bool(resp.responder_name == cert.subject)


def verify_signature(resp: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    """Whether ``signer``'s key made the response's signature (nothing more is checked)."""
    key = signer.public_key()
    data, signature = resp.tbs_response_bytes, resp.signature
    try:
        algorithm = resp.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise SignatureInvalid(f"unsupported signature algorithm: {exc}") from None
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(algorithm, hashes.HashAlgorithm):
                raise SignatureInvalid("RSA signature without a hash algorithm")
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(algorithm, hashes.HashAlgorithm):
                raise SignatureInvalid("ECDSA signature without a hash algorithm")
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise SignatureInvalid(f"unsupported signer key type {type(key).__name__}")
    except InvalidSignature:
        raise SignatureInvalid(
            f"signature does not verify under {signer.subject.rfc4514_string()}"
        ) from None
    except (TypeError, ValueError) as exc:  # key and algorithm do not fit together
        raise SignatureInvalid(f"signature cannot be checked: {exc}") from None


def _check_delegate(
    delegate: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime.datetime,
    skew: datetime.timedelta,
) -> None:
    who = delegate.subject.rfc4514_string()
    if not signed_by(delegate, issuer):
        raise SignerUnauthorized(
            f"delegated signer {who} was not issued by the certificate's issuer"
        )
    try:
        eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise SignerUnauthorized(f"delegated signer {who} has no extended key usage") from None
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise SignerUnauthorized(f"delegated signer {who} lacks id-kp-OCSPSigning")
    if not (delegate.not_valid_before_utc - skew <= now <= delegate.not_valid_after_utc + skew):
        raise SignerUnauthorized(
            f"delegated signer {who} is not valid now "
            f"({delegate.not_valid_before_utc.isoformat()} .. "
            f"{delegate.not_valid_after_utc.isoformat()})"
        )


def _authenticate(
    resp: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    now: datetime.datetime,
    skew: datetime.timedelta,
) -> Signer:
    if _names_responder(resp, issuer):
        verify_signature(resp, issuer)
        return Signer.ISSUER
    delegates = [c for c in resp.certificates if _names_responder(resp, c)]
    if not delegates:
        raise SignerUnauthorized(
            "the response is signed neither by the issuer nor by a certificate it carries"
        )
    delegate = delegates[0]
    _check_delegate(delegate, issuer, now, skew)
    verify_signature(resp, delegate)
    return Signer.DELEGATED


def verify_response(
    der: bytes,
    *,
    cert_id: CertID,
    issuer: x509.Certificate,
    now: datetime.datetime,
    policy: VerifyPolicy | None = None,
    held: Staple | None = None,
) -> Staple:
    """Return the verified Staple, or raise the OCSPError that says why it is not one."""
    policy = policy or VerifyPolicy()
    resp = parse_response(der)
    try:  # cryptography parses lazily: malformed parts surface only when read
        single = _single_for(resp, cert_id)
        signer = _authenticate(resp, issuer, now, policy.skew)
        this_update, next_update = single.this_update_utc, single.next_update_utc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ResponseMalformed(f"malformed response: {exc}") from None

    if this_update > now + policy.skew:
        raise NotYetValid(f"thisUpdate {this_update.isoformat()} is in the future")
    if next_update is None:
        if policy.require_next_update:
            raise NoNextUpdate("the response has no nextUpdate")
        expires_at = this_update + policy.assumed_validity
    else:
        expires_at = next_update
    if expires_at <= now:
        raise Expired(f"the response expired at {expires_at.isoformat()}")
    if held is not None and this_update < held.this_update:
        raise Stale(
            f"thisUpdate {this_update.isoformat()} is older than the held one's "
            f"{held.this_update.isoformat()}"
        )

    status = _STATUS[single.certificate_status]
    revocation_time = revocation_reason = None
    if status is CertStatus.REVOKED:
        revocation_time = single.revocation_time_utc
        reason = single.revocation_reason
        revocation_reason = reason.value if reason is not None else None
    return Staple(
        der=der,
        status=status,
        serial_number=single.serial_number,
        this_update=this_update,
        next_update=next_update,
        produced_at=resp.produced_at_utc,
        signer=signer,
        expires_at=expires_at,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
    )


def cert_id_in(der: bytes, leaf: x509.Certificate, issuer: x509.Certificate) -> CertID:
    """The CertID to expect in a response we did not request (a staple read from a Secret):
    our certificate, hashed with whatever algorithm the response's first answer uses."""
    resp = parse_response(der)
    try:
        first = next(iter(resp.responses))
    except (StopIteration, ValueError):
        raise ResponseMalformed("the response holds no SingleResponse") from None
    return CertID.of(leaf, issuer, first.hash_algorithm.name)
