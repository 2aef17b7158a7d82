"""Verifying an OCSP response: nothing is trusted until every check here has passed.

The checks, in order (each failure is its own ``OCSPError`` subclass):

1. the DER parses as an OCSP response, and responseStatus is ``successful``;
2. it holds exactly one SingleResponse whose CertID (hash algorithm, issuer name hash, issuer
   key hash, serial) is ours, and no critical extension but the nonce;
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
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, OCSPExtensionOID

from ocsp_stapler.ocsp import der
from ocsp_stapler.ocsp.chains import is_ca, signed_by
from ocsp_stapler.ocsp.errors import (
    CertIDMismatch,
    Expired,
    NoNextUpdate,
    NotYetValid,
    OCSPError,
    ResponderError,
    ResponseMalformed,
    SignatureInvalid,
    SignerUnauthorized,
    Stale,
)
from ocsp_stapler.ocsp.queries import CERTID_HASHES, CertID, public_key_bits

MAX_RESPONSE_BYTES = 64 * 1024

MAX_SINGLE_RESPONSES = 64
"""A response answering more certificates than this is refused (CAs batch at most a few)."""

MAX_CARRIED_CERTIFICATES = 8
"""At most this many certificates carried in a response are tried as its signer."""

WEAK_SIGNATURE_HASHES = frozenset({"md5"})
"""Signatures over these hashes are refused everywhere (SHA-1 stays: real CAs still use it)."""

_DELEGATE_CRITICAL_OK = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.OCSP_NO_CHECK,
        ExtensionOID.CERTIFICATE_POLICIES,
    }
)
"""Extensions a delegated responder certificate may mark critical: those checked here, and
those that only describe it. Any other critical extension is one we would be ignoring."""


_LATEST = datetime.datetime.max.replace(tzinfo=datetime.UTC)
_EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _shifted(when: datetime.datetime, by: datetime.timedelta) -> datetime.datetime:
    """``when + by``, held at the ends of the calendar: certificates say 99991231235959Z for
    "no expiry" (RFC 5280 4.1.2.5), and adding the skew to that must not raise."""
    try:
        return when + by
    except OverflowError:
        return _LATEST if by > datetime.timedelta(0) else _EARLIEST


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
    """The CRLReason's name (RFC 5280), when it is one of the defined codes."""
    revocation_reason_code: int | None = None
    """The raw CRLReason code, whatever it is (7 is unused, above 10 undefined)."""
    issuer_key_hash: bytes = b""
    """The issuer key hash of the CertID it was verified for (binds a re-check to it)."""

    def valid_at(self, now: datetime.datetime) -> bool:
        return self.expires_at > now

    @property
    def revocation_label(self) -> str | None:
        """ "keyCompromise", "reason code 7" or None: how a revocation reads everywhere."""
        if self.revocation_reason:
            return self.revocation_reason
        if self.revocation_reason_code is not None:
            return f"reason code {self.revocation_reason_code}"
        return None


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


def _single_for(resp: ocsp.OCSPResponse, cert_id: CertID) -> tuple[int, ocsp.OCSPSingleResponse]:
    """The answer for our certificate (and its position), each answer read in its own hash.

    Two answers for our certificate are refused unless one says revoked: a CA that says
    revoked anywhere is believed, and never hidden behind a contradicting good.
    """
    singles = list(resp.responses)
    if len(singles) > MAX_SINGLE_RESPONSES:
        raise CertIDMismatch(
            f"the response holds {len(singles)} answers, more than {MAX_SINGLE_RESPONSES}"
        )
    matching = [(i, s) for i, s in enumerate(singles) if cert_id.matches(s)]
    if len(matching) > 1:
        revoked = [m for m in matching if m[1].certificate_status is ocsp.OCSPCertStatus.REVOKED]
        if revoked:
            return revoked[0]
    if len(matching) != 1:
        serials = ", ".join(format(s.serial_number, "X") for s in singles[:4]) or "none"
        raise CertIDMismatch(
            f"expected exactly one answer for serial {cert_id.serial_number:X} "
            f"(in {', '.join(CERTID_HASHES)}), found {len(matching)} among {len(singles)} "
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
    if isinstance(algorithm, hashes.HashAlgorithm) and algorithm.name in WEAK_SIGNATURE_HASHES:
        raise SignatureInvalid(f"{algorithm.name.upper()} signatures are refused")
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
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:  # key and algorithm misfit
        raise SignatureInvalid(f"signature cannot be checked: {exc}") from None


def _check_delegate(
    delegate: x509.Certificate,
    issuer: x509.Certificate,
    now: datetime.datetime,
    skew: datetime.timedelta,
) -> None:
    """RFC 6960 4.2.2.2 and CA/B Forum BR 7.1.2.8: what makes a certificate a responder's."""
    who = delegate.subject.rfc4514_string()
    if not signed_by(delegate, issuer):
        raise SignerUnauthorized(
            f"delegated signer {who} was not issued by the certificate's issuer"
        )
    extensions = delegate.extensions
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise SignerUnauthorized(f"delegated signer {who} has no extended key usage") from None
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        raise SignerUnauthorized(f"delegated signer {who} lacks id-kp-OCSPSigning")
    if is_ca(delegate):
        raise SignerUnauthorized(
            f"delegated signer {who} is a CA certificate (basicConstraints cA): "
            "a CA's key must not sign as a delegated responder (CA/B BR 7.1.2.8)"
        )
    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    if key_usage is not None and not key_usage.digital_signature:
        raise SignerUnauthorized(f"delegated signer {who}: keyUsage lacks digitalSignature")
    unknown = [
        e.oid.dotted_string for e in extensions if e.critical and e.oid not in _DELEGATE_CRITICAL_OK
    ]
    if unknown:
        raise SignerUnauthorized(
            f"delegated signer {who} carries critical extensions we do not process: "
            + ", ".join(unknown)
        )
    valid_from = _shifted(delegate.not_valid_before_utc, -skew)
    if not (valid_from <= now <= _shifted(delegate.not_valid_after_utc, skew)):
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
    """Who signed: the issuer, or a delegate it authorized. Every certificate the response
    carries that the ResponderID designates is tried (a same-name decoy listed first must
    not hide the real signer); the first refusal is reported when none verifies."""
    refusals: list[OCSPError] = []
    if _names_responder(resp, issuer):
        try:
            verify_signature(resp, issuer)
        except SignatureInvalid as exc:
            refusals.append(exc)
        else:
            return Signer.ISSUER
    carried = resp.certificates
    delegates = [c for c in carried[:MAX_CARRIED_CERTIFICATES] if _names_responder(resp, c)]
    for delegate in delegates:
        try:
            _check_delegate(delegate, issuer, now, skew)
            verify_signature(resp, delegate)
        except (SignerUnauthorized, SignatureInvalid) as exc:
            refusals.append(exc)
            continue
        except Exception as exc:
            refusals.append(SignerUnauthorized(f"a carried certificate is unreadable: {exc}"))
            continue
        return Signer.DELEGATED
    if refusals:
        raise refusals[0]
    raise SignerUnauthorized(
        "the response is signed neither by the issuer nor by a certificate it carries"
    )


def _refuse_critical_extensions(resp: ocsp.OCSPResponse, index: int) -> None:
    """RFC 6960 4.4 / RFC 5280 4.2: an extension marked critical that the verifier does not
    process makes the answer unusable. Only the nonce is processed (by the fetcher, against
    the one it sent); anything else critical, in responseExtensions or in our answer's
    singleExtensions, is refused rather than silently ignored."""
    try:
        found = der.critical_extensions(resp.tbs_response_bytes, index)
    except der.DerError as exc:
        raise ResponseMalformed(f"unreadable extensions: {exc}") from None
    nonce = OCSPExtensionOID.NONCE.dotted_string
    unknown = [o for o in found.response if o != nonce] + found.single
    if unknown:
        raise ResponseMalformed(
            "the response carries critical extensions we do not process: " + ", ".join(unknown)
        )


def _revocation(
    resp: ocsp.OCSPResponse, index: int, single: ocsp.OCSPSingleResponse
) -> tuple[datetime.datetime | None, str | None, int | None]:
    """(time, reason name, raw reason code) of a revoked answer. An odd reason code never
    hides the revocation: cryptography refuses codes outside its enum (7, 11, ...), so the
    raw number is read from the DER; a reason that cannot be read at all is just absent."""
    when = single.revocation_time_utc
    try:
        code = der.revocation_reason_code(resp.tbs_response_bytes, index)
    except der.DerError:
        code = None
    try:
        flag = single.revocation_reason
    except ValueError:
        flag = None
    return when, (flag.value if flag is not None else None), code


def _verified_before(der_bytes: bytes, cert_id: CertID, held: Staple) -> bool:
    """The very bytes verified before for this CertID (a CDN hands back the same response
    for days): signature and CertID cannot have changed, only time can. A delegated signer's
    validity depends on the time too, so those are verified again in full."""
    return (
        held.signer is Signer.ISSUER
        and der_bytes == held.der
        and held.serial_number == cert_id.serial_number
        and held.issuer_key_hash == cert_id.issuer_key_hash
    )


def _never_backwards(this_update: datetime.datetime, status: CertStatus, held: Staple) -> None:
    if this_update < held.this_update:
        raise Stale(
            f"thisUpdate {this_update.isoformat()} is older than the held one's "
            f"{held.this_update.isoformat()}"
        )
    if (
        this_update == held.this_update
        and held.status is CertStatus.REVOKED
        and status is not CertStatus.REVOKED
    ):
        raise Stale(
            f"a {status} answer as new as the held revoked one ({this_update.isoformat()}): "
            "a revocation is never taken back"
        )


def verify_response(
    der_bytes: bytes,
    *,
    cert_id: CertID,
    issuer: x509.Certificate,
    now: datetime.datetime,
    policy: VerifyPolicy | None = None,
    held: Staple | None = None,
) -> Staple:
    """Return the verified Staple, or raise the OCSPError that says why it is not one.

    Nothing but ``OCSPError`` leaves this function, whatever the bytes: cryptography parses
    lazily, so every field is read inside one guard that names a malformed part.
    """
    policy = policy or VerifyPolicy()
    if held is not None and _verified_before(der_bytes, cert_id, held):
        if held.expires_at <= now:
            raise Expired(f"the response expired at {held.expires_at.isoformat()}")
        return held
    resp = parse_response(der_bytes)
    try:
        index, single = _single_for(resp, cert_id)
        _refuse_critical_extensions(resp, index)
        signer = _authenticate(resp, issuer, now, policy.skew)
        this_update, next_update = single.this_update_utc, single.next_update_utc
        produced_at = resp.produced_at_utc
        status = _STATUS[single.certificate_status]
        revocation_time, revocation_reason, reason_code = (
            _revocation(resp, index, single) if status is CertStatus.REVOKED else (None, None, None)
        )
        serial_number = single.serial_number
    except OCSPError:
        raise
    except Exception as exc:
        # kinds (ValueError, UnsupportedAlgorithm, DuplicateExtension, ...): all are malformed
        raise ResponseMalformed(f"malformed response: {exc}") from None

    latest = _shifted(now, policy.skew)
    if this_update > latest:
        raise NotYetValid(f"thisUpdate {this_update.isoformat()} is in the future")
    if produced_at > latest:
        raise NotYetValid(f"producedAt {produced_at.isoformat()} is in the future")
    if next_update is not None and next_update < this_update:
        raise ResponseMalformed(
            f"nextUpdate {next_update.isoformat()} is before thisUpdate {this_update.isoformat()}"
        )
    if next_update is None:
        if policy.require_next_update:
            raise NoNextUpdate("the response has no nextUpdate")
        expires_at = _shifted(this_update, policy.assumed_validity)
    else:
        expires_at = next_update
    if expires_at <= now:
        raise Expired(f"the response expired at {expires_at.isoformat()}")
    if held is not None:
        _never_backwards(this_update, status, held)
    return Staple(
        der=der_bytes,
        status=status,
        serial_number=serial_number,
        this_update=this_update,
        next_update=next_update,
        produced_at=produced_at,
        signer=signer,
        expires_at=expires_at,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
        revocation_reason_code=reason_code,
        issuer_key_hash=cert_id.issuer_key_hash,
    )


def claimed_expiry(
    der_bytes: bytes, *, serial_number: int, policy: VerifyPolicy
) -> datetime.datetime:
    """When a response that cannot be verified yet (its issuer is still unknown) would expire
    at the latest, by what it claims: the latest nextUpdate among its answers for the serial.

    Unverified, so only ever used to remove a staple sooner, never to keep or serve one: a
    staple stays no longer than any answer in it could be valid. ``ResponseMalformed`` (or
    ``NoNextUpdate`` when the policy requires it) when no answer could ever be verified.
    """
    resp = parse_response(der_bytes)
    try:
        singles = [s for s in resp.responses if s.serial_number == serial_number]
        if not singles:
            raise CertIDMismatch(f"the response holds no answer for serial {serial_number:X}")
        ends: list[datetime.datetime] = []
        for single in singles[:MAX_SINGLE_RESPONSES]:
            next_update = single.next_update_utc
            if next_update is None:
                if policy.require_next_update:
                    raise NoNextUpdate("the response has no nextUpdate")
                next_update = _shifted(single.this_update_utc, policy.assumed_validity)
            ends.append(next_update)
    except OCSPError:
        raise
    except Exception as exc:
        raise ResponseMalformed(f"malformed response: {exc}") from None
    return max(ends)


def tells_more(new: Staple, known: Staple) -> bool:
    """Whether ``new`` tells more than ``known``: newer, or as new and revoked where the other
    is not (a CA that rounds thisUpdate can sign both within one second)."""
    if new.this_update != known.this_update:
        return new.this_update > known.this_update
    return new.status is CertStatus.REVOKED and known.status is not CertStatus.REVOKED
