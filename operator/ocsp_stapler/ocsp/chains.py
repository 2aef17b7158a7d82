"""Certificate chains: which certificate is the leaf, which one issued it, where to ask about it.

A Secret's ``tls.crt`` holds the leaf first and, usually, the intermediates after it; ``ca.crt``
may hold more. The issuer is not "the next certificate" but the one whose subject is the leaf's
issuer *and* whose key verifies the leaf's signature: bundles in the wild are misordered,
duplicated or carry cross-signs, and an OCSP request built for the wrong issuer is answered
"unknown" or not at all.

Everything here is bounded: a chain of more than ``MAX_CERTIFICATES`` is refused, and at most
``MAX_URLS`` responder or caIssuers URLs are taken from one certificate, so hostile input costs
little.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from ocsp_stapler.ocsp.errors import ChainInvalid

MAX_CERTIFICATES = 16
"""More certificates than this in one chain is refused (real chains hold 2-4)."""

MAX_URLS = 4
"""At most this many OCSP (or caIssuers) URLs are taken from one certificate, in order."""

MAX_PEM_BYTES = 256 * 1024
"""A tls.crt larger than this is refused before parsing."""

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PKCS7_BEGIN = b"-----BEGIN PKCS7-----"

_STATUS_REQUEST = 5
"""TLS Feature value for status_request (RFC 7633): must-staple."""


def parse_pem_certificates(data: bytes, *, what: str = "tls.crt") -> list[x509.Certificate]:
    """All certificates in a PEM bundle, in order; a clear ChainInvalid for anything else."""
    if len(data) > MAX_PEM_BYTES:
        raise ChainInvalid(f"{what} is {len(data)} bytes, more than {MAX_PEM_BYTES}")
    count = data.count(_PEM_BEGIN)
    if count == 0:
        raise ChainInvalid(f"{what} holds no PEM certificate")
    if count > MAX_CERTIFICATES:
        raise ChainInvalid(f"{what} holds {count} certificates, more than {MAX_CERTIFICATES}")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise ChainInvalid(f"{what} is not valid PEM: {exc}") from None
    return [_checked(cert, what) for cert in certs]


def _checked(cert: x509.Certificate, what: str) -> x509.Certificate:
    """Parse every field we read now: cryptography parses lazily, and a malformed name or
    extension found later would surface as a stray ValueError instead of a named refusal."""
    try:
        _ = (cert.subject, cert.issuer, cert.extensions, cert.serial_number)
        _ = (cert.not_valid_after_utc, cert.public_key())
    except Exception as exc:
        # UnsupportedGeneralNameType (plain Exceptions): whatever it raises, the verdict is ours
        raise ChainInvalid(f"{what} holds a malformed certificate: {exc}") from None
    return cert


def load_certificates(data: bytes, *, what: str) -> list[x509.Certificate]:
    """Certificates from PEM, DER or PKCS#7 (DER, or PEM-armoured): the forms CAs publish at
    caIssuers URLs and hand to their customers."""
    if _PEM_BEGIN in data:
        return parse_pem_certificates(data, what=what)
    if _PKCS7_BEGIN in data:
        try:
            certs = pkcs7.load_pem_pkcs7_certificates(data)
        except Exception:  # ValueError, UnsupportedAlgorithm: whatever it is, it is not usable
            raise ChainInvalid(f"{what} is not a readable PEM PKCS#7 bundle") from None
        if not certs:
            raise ChainInvalid(f"{what} holds no certificate")
        return [_checked(c, what) for c in _bounded(certs, what)]
    try:
        return [_checked(x509.load_der_x509_certificate(data), what)]
    except (ValueError, x509.InvalidVersion):
        pass
    try:
        certs = pkcs7.load_der_pkcs7_certificates(data)
    except Exception:  # ValueError, and UnsupportedAlgorithm for a PKCS#7 that is not signedData
        raise ChainInvalid(f"{what} is neither a PEM, DER nor PKCS#7 certificate") from None
    if not certs:
        raise ChainInvalid(f"{what} holds no certificate")
    return [_checked(c, what) for c in _bounded(certs, what)]


def _bounded(certs: list[x509.Certificate], what: str) -> list[x509.Certificate]:
    """Refused, not cut: dropping the rest could drop the leaf."""
    if len(certs) > MAX_CERTIFICATES:
        raise ChainInvalid(f"{what} holds {len(certs)} certificates, more than {MAX_CERTIFICATES}")
    return certs


def signed_by(cert: x509.Certificate, candidate: x509.Certificate) -> bool:
    """Whether ``candidate`` issued ``cert``: names match and its key verifies the signature
    (both checked by cryptography, which compares the names without building Name objects:
    at 10,000 Secrets those were millions of allocations). cryptography refuses MD5 and
    unknown signature algorithms here, so such a certificate was signed by nobody."""
    try:
        cert.verify_directly_issued_by(candidate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def find_issuer(
    cert: x509.Certificate, candidates: list[x509.Certificate]
) -> x509.Certificate | None:
    """The first candidate that signed ``cert`` (a self-signed cert is not its own issuer)."""
    for candidate in candidates:
        if candidate is cert or candidate == cert:
            continue
        if signed_by(cert, candidate):
            return candidate
    return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and signed_by(cert, cert)


def _aia_urls(cert: x509.Certificate, method: x509.ObjectIdentifier) -> list[str]:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except (x509.ExtensionNotFound, ValueError):  # a malformed extension is as good as none
        return []
    urls = []
    for desc in aia.value:
        if desc.access_method == method and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            urls.append(desc.access_location.value)
    return urls[:MAX_URLS]


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The AIA id-ad-ocsp URLs, in the certificate's order (tried in that order)."""
    return _aia_urls(cert, AuthorityInformationAccessOID.OCSP)


def ca_issuer_urls(cert: x509.Certificate) -> list[str]:
    """The AIA id-ad-caIssuers URLs, where the issuer certificate can be downloaded."""
    return _aia_urls(cert, AuthorityInformationAccessOID.CA_ISSUERS)


def must_staple(cert: x509.Certificate) -> bool:
    """RFC 7633: the TLS Feature extension lists status_request."""
    try:
        features = cert.extensions.get_extension_for_class(x509.TLSFeature).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return any(f.value == _STATUS_REQUEST for f in features)


def sha256_hex(cert: x509.Certificate) -> str:
    """Fingerprint of the DER certificate: how a staple names the certificate it belongs to."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "X")


@dataclass(frozen=True)
class Chain:
    """A leaf and, when known, the certificate that issued it."""

    leaf: x509.Certificate
    issuer: x509.Certificate | None
    others: tuple[x509.Certificate, ...] = field(default=())
    """The rest of the bundle, in order (intermediates, roots)."""

    @property
    def self_signed(self) -> bool:
        return is_self_signed(self.leaf)


def assemble_chain(tls_crt: bytes, ca_crt: bytes | None = None) -> Chain:
    """Read tls.crt (leaf first) and optionally ca.crt; find the leaf's issuer among them.

    A bundle that starts with a CA certificate is refused: stapling the intermediate's status
    in place of the leaf's would be a wrong staple, and that is worse than none.
    """
    certs = parse_pem_certificates(tls_crt, what="tls.crt")
    leaf, rest = certs[0], certs[1:]
    if is_ca(leaf) and not is_self_signed(leaf):
        raise ChainInvalid(
            "tls.crt starts with a CA certificate "
            f"({leaf.subject.rfc4514_string()}); the leaf must come first"
        )
    extra: list[x509.Certificate] = []
    if ca_crt and ca_crt.strip():
        extra = parse_pem_certificates(ca_crt, what="ca.crt")
    others = tuple(rest + extra)
    return Chain(leaf=leaf, issuer=find_issuer(leaf, list(others)), others=others)
