"""OCSP requests: the CertID that names our certificate, and how it travels over HTTP.

RFC 6960 Appendix A and RFC 5019: a request whose base64 form is at most 255 bytes goes as
``GET {url}/{urlencoded base64}`` so that CDNs in front of responders can cache it; a longer
one goes as ``POST application/ocsp-request``. A responder that refuses the GET gets the POST.
No nonce by default: responders that pre-sign (all large CAs) ignore it, and a nonce defeats
caching; it is available for responders that demand one.
"""

from __future__ import annotations

import base64
import functools
import os
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ocsp_stapler.ocsp.der import spki_key_bits
from ocsp_stapler.ocsp.transport import OCSP_REQUEST_TYPE, HttpRequest

HashName = Literal["sha1", "sha256"]
MAX_GET_LENGTH = 255

CERTID_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")
"""The CertID hashes an answer may use to name our certificate. MD5 is not among them: a
CertID is a name, but a name an attacker can collide with is no name."""

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits (what CertID and ResponderID byKey hash)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki_key_bits(spki)


@functools.lru_cache(maxsize=1024)
def _issuer_parts(issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """The issuer's DER name and key bits: once per issuer (10,000 leaves share a few)."""
    return issuer.subject.public_bytes(), public_key_bits(issuer)


@functools.lru_cache(maxsize=1024)
def _issuer_hashes(name_der: bytes, key_bits: bytes, hash_name: str) -> tuple[bytes, bytes]:
    try:
        algorithm = _HASHES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported CertID hash {hash_name!r}") from None
    return _digest(algorithm(), name_der), _digest(algorithm(), key_bits)


@dataclass(frozen=True)
class CertID:
    """What an OCSP response must echo back for it to be about our certificate.

    The digests are those of ``hash_algorithm`` (what a request sends); ``matches`` accepts a
    SingleResponse that names the same certificate under any hash in ``CERTID_HASHES``,
    because each answer of a multi-answer response carries its own algorithm.
    """

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    issuer_name_der: bytes = field(default=b"", repr=False, compare=False)
    issuer_key_bits: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def for_serial(
        cls, issuer: x509.Certificate, serial_number: int, hash_name: str = "sha1"
    ) -> CertID:
        """RFC 6960 4.1.1: hashes of the issuer's DER name and of its public key's bits."""
        name_der, key_bits = _issuer_parts(issuer)
        return cls._of(name_der, key_bits, serial_number, hash_name)

    @classmethod
    def _of(cls, name_der: bytes, key_bits: bytes, serial_number: int, hash_name: str) -> CertID:
        name_hash, key_hash = _issuer_hashes(name_der, key_bits, hash_name)
        return cls(
            hash_algorithm=hash_name,
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial_number,
            issuer_name_der=name_der,
            issuer_key_bits=key_bits,
        )

    @classmethod
    def of(
        cls, leaf: x509.Certificate, issuer: x509.Certificate, hash_name: str = "sha1"
    ) -> CertID:
        return cls.for_serial(issuer, leaf.serial_number, hash_name)

    def matches(self, single: ocsp.OCSPSingleResponse) -> bool:
        """Whether ``single`` answers for our certificate, in whatever accepted hash it uses.

        An answer in a hash cryptography cannot name (MD5, SHA-3, an unknown OID) is nobody's.
        """
        if single.serial_number != self.serial_number:
            return False
        try:
            name = single.hash_algorithm.name
        except UnsupportedAlgorithm:
            return False
        if name == self.hash_algorithm:
            ours = self
        elif name in CERTID_HASHES and self.issuer_key_bits:
            ours = self._of(self.issuer_name_der, self.issuer_key_bits, self.serial_number, name)
        else:
            return False
        return (
            single.issuer_name_hash == ours.issuer_name_hash
            and single.issuer_key_hash == ours.issuer_key_hash
        )


@dataclass(frozen=True)
class Query:
    """One OCSP request, ready to send, and the CertID the answer must match."""

    der: bytes
    cert_id: CertID
    nonce: bytes | None = None


def build_query(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    *,
    hash_name: HashName = "sha1",
    nonce: bool = False,
) -> Query:
    algorithm = _HASHES[hash_name]()
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, algorithm)
    nonce_value = None
    if nonce:
        nonce_value = os.urandom(16)
        builder = builder.add_extension(x509.OCSPNonce(nonce_value), critical=False)
    der = builder.build().public_bytes(serialization.Encoding.DER)
    return Query(der=der, cert_id=CertID.of(leaf, issuer, hash_name), nonce=nonce_value)


def get_request(url: str, der: bytes) -> HttpRequest | None:
    """The GET form, or None when the encoded request is longer than 255 bytes."""
    encoded = quote(base64.b64encode(der).decode(), safe="")
    if len(encoded) > MAX_GET_LENGTH:
        return None
    return HttpRequest(method="GET", url=url.rstrip("/") + "/" + encoded)


def post_request(url: str, der: bytes) -> HttpRequest:
    return HttpRequest(
        method="POST", url=url, body=der, headers=(("Content-Type", OCSP_REQUEST_TYPE),)
    )


def http_requests(url: str, der: bytes) -> list[HttpRequest]:
    """What to try, in order, against one responder URL: GET then POST, or POST alone."""
    get = get_request(url, der)
    return [post_request(url, der)] if get is None else [get, post_request(url, der)]
