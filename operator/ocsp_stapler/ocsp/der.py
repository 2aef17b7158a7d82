"""Just enough DER reading for the fields cryptography will not hand over.

cryptography parses OCSP responses and keys well, but it refuses to return some values that
real responses carry: a revocation reason code outside its enum (7 is unused in RFC 5280,
anything above 10 is undefined) raises instead of returning the number, and a public key's
raw BIT STRING is not exposed at all. Hiding a revocation because its reason is odd would be
the worst possible outcome, so these few reads are done here, on bytes cryptography has
already accepted, with every length checked against its container. Anything that does not
fit raises ``DerError``, a ``ValueError`` that callers turn into their own refusal.
"""

from __future__ import annotations

from typing import NamedTuple


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


class Element(NamedTuple):
    tag: int
    start: int
    """Offset of the content."""
    end: int
    """Offset just past the content."""


def element(data: bytes, offset: int, limit: int | None = None) -> Element:
    """The TLV starting at ``offset``, whose content must end by ``limit`` (default: the end)."""
    limit = len(data) if limit is None else limit
    if offset + 2 > limit:
        raise DerError("truncated header")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used in OCSP")
    if first < 0x80:
        start, length = offset + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or offset + 2 + count > limit:
            raise DerError("bad length")
        start = offset + 2 + count
        length = int.from_bytes(data[offset + 2 : start], "big")
    if start + length > limit:
        raise DerError("content runs past its container")
    return Element(tag, start, start + length)


def children(data: bytes, parent: Element) -> list[Element]:
    """The elements inside a constructed ``parent``, in order."""
    out, offset = [], parent.start
    while offset < parent.end:
        child = element(data, offset, parent.end)
        out.append(child)
        offset = child.end
    return out


def integer(data: bytes, elem: Element) -> int:
    if elem.end == elem.start:
        raise DerError("empty integer")
    return int.from_bytes(data[elem.start : elem.end], "big", signed=True)


_SEQUENCE, _GENERALIZED_TIME = 0x30, 0x18
_REVOKED, _REASON, _ENUMERATED = 0xA1, 0xA0, 0x0A


def revocation_reason_code(tbs_response_data: bytes, index: int) -> int | None:
    """The raw CRLReason of the ``index``-th SingleResponse (None when it carries none).

    ResponseData ::= SEQUENCE { version [0] EXPLICIT OPTIONAL, responderID, producedAt
    GeneralizedTime, responses SEQUENCE OF SingleResponse, responseExtensions [1] OPTIONAL }
    SingleResponse ::= SEQUENCE { certID, certStatus, ... }; revoked [1] IMPLICIT RevokedInfo
    ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason }.
    """
    top = element(tbs_response_data, 0)
    parts = children(tbs_response_data, top)
    produced = next((i for i, p in enumerate(parts) if p.tag == _GENERALIZED_TIME), None)
    if produced is None or produced + 1 >= len(parts) or parts[produced + 1].tag != _SEQUENCE:
        raise DerError("no responses after producedAt")
    singles = children(tbs_response_data, parts[produced + 1])
    if not 0 <= index < len(singles):
        raise DerError("no such SingleResponse")
    fields = children(tbs_response_data, singles[index])
    if len(fields) < 2 or fields[1].tag != _REVOKED:
        raise DerError("not a revoked answer")
    for part in children(tbs_response_data, fields[1]):
        if part.tag == _REASON:
            inner = children(tbs_response_data, part)
            if len(inner) != 1 or inner[0].tag != _ENUMERATED:
                raise DerError("revocationReason is not an ENUMERATED")
            return integer(tbs_response_data, inner[0])
    return None


def bit_string_bits(data: bytes, elem: Element) -> bytes:
    """A BIT STRING's bits, without the unused-bits octet."""
    if elem.end == elem.start:
        raise DerError("empty BIT STRING")
    return data[elem.start + 1 : elem.end]


def spki_key_bits(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a SubjectPublicKeyInfo (what CertID and byKey hash)."""
    parts = children(spki, element(spki, 0))
    if len(parts) != 2:
        raise DerError("SubjectPublicKeyInfo has not two parts")
    return bit_string_bits(spki, parts[1])
