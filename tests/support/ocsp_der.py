"""OCSP responses written DER by DER, for the inputs cryptography's builder refuses to make.

``OCSPResponseBuilder`` only signs with SHA-1/SHA-2 CertIDs, known reason codes and modern
signature algorithms, but a CA (or an attacker who controls a Secret) can hand us anything:
MD5 or SHA3 CertIDs, CertIDs under an OID nobody knows, reason code 7 or 200, md5WithRSA
signatures, nextUpdate before thisUpdate, a dozen SingleResponses in mixed hashes. This
module writes those, signed for real, so the property tests can feed the verifier the whole
space instead of what one library happens to produce.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ocsp_stapler.ocsp.queries import public_key_bits

SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

HASH_OIDS = {
    "md5": "1.2.840.113549.2.5",
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
    "sha3_256": "2.16.840.1.101.3.4.2.8",
    "sha3_512": "2.16.840.1.101.3.4.2.10",
    "unknown": "1.2.3.4.5.6.7",
}
"""CertID hash algorithms: every one cryptography knows for CertIDs, some it does not."""

_DIGEST_SIZE = {"unknown": 20}

SIGNATURE_OIDS = {
    ("rsa", "md5"): "1.2.840.113549.1.1.4",
    ("rsa", "sha1"): "1.2.840.113549.1.1.5",
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",
    ("rsa", "sha384"): "1.2.840.113549.1.1.12",
    ("ec", "sha1"): "1.2.840.10045.4.1",
    ("ec", "sha256"): "1.2.840.10045.4.3.2",
    ("ec", "sha384"): "1.2.840.10045.4.3.3",
    ("ed25519", None): "1.3.101.112",
}

_SIGN_HASHES: dict[str, hashes.HashAlgorithm] = {
    "md5": hashes.MD5(),
    "sha1": hashes.SHA1(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
}


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def enumerated(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x0A, value.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):  # base 128, high bit = "more follows"
        chunk, rest = [arc & 0x7F], arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def octets(value: bytes) -> bytes:
    return tlv(0x04, value)


def bits(value: bytes) -> bytes:
    return tlv(0x03, b"\x00" + value)


def explicit(number: int, content: bytes) -> bytes:
    return tlv(0xA0 | number, content)


def gtime(when: datetime.datetime) -> bytes:
    return tlv(0x18, when.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%SZ").encode())


def digest(hash_name: str, data: bytes) -> bytes:
    """The CertID hash of ``data``; an unknown algorithm gets bytes of a plausible size."""
    if hash_name in _DIGEST_SIZE:
        return hashlib.sha1(data).digest()  # noqa: S324 - a stand-in value, not security
    return hashlib.new(hash_name.replace("_", "-"), data).digest()


NONCE_OID = "1.3.6.1.5.5.7.48.1.2"


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool = False
    value: bytes = b"\x04\x00"
    """extnValue's content (DER of the extension's own value)."""

    def der(self) -> bytes:
        flag = tlv(0x01, b"\xff") if self.critical else b""
        return seq(oid(self.oid), flag, octets(self.value))


def extensions_field(extensions: Sequence[Extension]) -> bytes:
    """``[1] EXPLICIT Extensions`` (single or response extensions), or nothing when empty."""
    return explicit(1, seq(*(e.der() for e in extensions))) if extensions else b""


@dataclass(frozen=True)
class Answer:
    """One SingleResponse."""

    serial: int
    issuer: x509.Certificate
    hash_name: str = "sha1"
    status: Literal["good", "revoked", "unknown"] = "good"
    this_update: datetime.datetime | None = None
    next_update: datetime.datetime | None = None
    revocation_time: datetime.datetime | None = None
    reason: int | None = None
    """The raw CRLReason code (anything, not only 0-10)."""
    extensions: Sequence[Extension] = ()

    def der(self, now: datetime.datetime) -> bytes:
        name_hash = digest(self.hash_name, self.issuer.subject.public_bytes())
        key_hash = digest(self.hash_name, public_key_bits(self.issuer))
        cert_id = seq(
            seq(oid(HASH_OIDS[self.hash_name]), tlv(0x05, b"")),
            octets(name_hash),
            octets(key_hash),
            integer(self.serial),
        )
        if self.status == "good":
            status = tlv(0x80, b"")
        elif self.status == "unknown":
            status = tlv(0x82, b"")
        else:
            revoked = gtime(self.revocation_time or now - datetime.timedelta(hours=1))
            if self.reason is not None:
                revoked += explicit(0, enumerated(self.reason))
            status = tlv(0xA1, revoked)
        this_update = gtime(self.this_update or now - datetime.timedelta(minutes=1))
        next_update = b"" if self.next_update is None else explicit(0, gtime(self.next_update))
        return seq(cert_id, status, this_update, next_update, extensions_field(self.extensions))


@dataclass(frozen=True)
class ResponseSpec:
    """A whole successful OCSP response, signed by ``key``."""

    answers: Sequence[Answer]
    key: SignerKey
    responder: x509.Certificate
    """Named in the ResponderID (by key hash, or by name when ``by_name``)."""
    by_name: bool = False
    produced_at: datetime.datetime | None = None
    signature_hash: str | None = "sha256"
    """The hash of the signature algorithm (None for Ed25519)."""
    signature_oid: str | None = None
    """Override the signature algorithm's OID (e.g. one nobody knows)."""
    certs: Sequence[x509.Certificate] = field(default=())
    extensions: Sequence[Extension] = ()
    """responseExtensions."""

    def der(self, now: datetime.datetime) -> bytes:
        if self.by_name:
            responder_id = explicit(1, self.responder.subject.public_bytes())
        else:
            key_hash = hashlib.sha1(public_key_bits(self.responder)).digest()  # noqa: S324
            responder_id = explicit(2, octets(key_hash))
        tbs = seq(
            responder_id,
            gtime(self.produced_at or now),
            seq(*(a.der(now) for a in self.answers)),
            extensions_field(self.extensions),
        )
        signature, kind = self._sign(tbs)
        algorithm_oid = self.signature_oid or SIGNATURE_OIDS[(kind, self.signature_hash)]
        algorithm = (
            seq(oid(algorithm_oid)) if kind != "rsa" else seq(oid(algorithm_oid), tlv(5, b""))
        )
        certs = b""
        if self.certs:
            ders = b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.certs)
            certs = explicit(0, tlv(0x30, ders))
        basic = seq(tbs, algorithm, bits(signature), certs)
        response_bytes = seq(oid("1.3.6.1.5.5.7.48.1.1"), octets(basic))
        return seq(tlv(0x0A, b"\x00"), explicit(0, response_bytes))

    def _sign(self, tbs: bytes) -> tuple[bytes, str]:
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(tbs), "ed25519"
        algorithm = _SIGN_HASHES[self.signature_hash or "sha256"]
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(tbs, padding.PKCS1v15(), algorithm), "rsa"
        return key.sign(tbs, ec.ECDSA(algorithm)), "ec"
