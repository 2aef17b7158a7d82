"""Just enough DER reading for the fields cryptography will not hand over.

cryptography parses OCSP responses and keys well, but it refuses to return some values that
real responses carry: a revocation reason code outside its enum (7 is unused in RFC 5280,
anything above 10 is undefined) raises instead of returning the number, a public key's
raw BIT STRING is not exposed at all, and the singleExtensions of any answer but the first
(where a critical extension we would be ignoring can sit) are out of reach. Hiding a
revocation because its reason is odd would be the worst possible outcome, so these few
reads are done here, on bytes cryptography has already accepted, with every length checked
against its container. Anything that does not fit raises ``DerError``, a ``ValueError``
that callers turn into their own refusal.
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
_EXTENSIONS, _OID, _BOOLEAN = 0xA1, 0x06, 0x01

MAX_OID_BYTES = 64
"""Real OIDs take under 40 bytes (UUID arcs under 2.25 about 20); longer is not an extension."""


def _response_parts(tbs_response_data: bytes) -> tuple[list[Element], int]:
    """ResponseData's parts, and the position of its ``responses`` SEQUENCE.

    ResponseData ::= SEQUENCE { version [0] EXPLICIT OPTIONAL, responderID, producedAt
    GeneralizedTime, responses SEQUENCE OF SingleResponse, responseExtensions [1] OPTIONAL }
    """
    parts = children(tbs_response_data, element(tbs_response_data, 0))
    produced = next((i for i, p in enumerate(parts) if p.tag == _GENERALIZED_TIME), None)
    if produced is None or produced + 1 >= len(parts) or parts[produced + 1].tag != _SEQUENCE:
        raise DerError("no responses after producedAt")
    return parts, produced + 1


def _single_fields(tbs_response_data: bytes, index: int) -> list[Element]:
    """The fields of the ``index``-th SingleResponse: SEQUENCE { certID, certStatus,
    thisUpdate, nextUpdate [0] EXPLICIT OPTIONAL, singleExtensions [1] EXPLICIT OPTIONAL }."""
    parts, at = _response_parts(tbs_response_data)
    singles = children(tbs_response_data, parts[at])
    if not 0 <= index < len(singles):
        raise DerError("no such SingleResponse")
    return children(tbs_response_data, singles[index])


def revocation_reason_code(tbs_response_data: bytes, index: int) -> int | None:
    """The raw CRLReason of the ``index``-th SingleResponse (None when it carries none).

    revoked [1] IMPLICIT RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime,
    revocationReason [0] EXPLICIT CRLReason OPTIONAL }.
    """
    fields = _single_fields(tbs_response_data, index)
    if len(fields) < 2 or fields[1].tag != _REVOKED:
        raise DerError("not a revoked answer")
    for part in children(tbs_response_data, fields[1]):
        if part.tag == _REASON:
            inner = children(tbs_response_data, part)
            if len(inner) != 1 or inner[0].tag != _ENUMERATED:
                raise DerError("revocationReason is not an ENUMERATED")
            return integer(tbs_response_data, inner[0])
    return None


class CriticalExtensions(NamedTuple):
    """Dotted OIDs of the extensions marked critical, where they appear."""

    response: list[str]
    """In responseExtensions (they apply to every answer)."""
    single: list[str]
    """In the singleExtensions of the answer asked about."""


def critical_extensions(tbs_response_data: bytes, index: int) -> CriticalExtensions:
    """The critical extensions a verifier must understand before it trusts the ``index``-th
    answer. cryptography exposes singleExtensions only for the first answer, so both lists
    are read here, from the signed bytes."""
    parts, at = _response_parts(tbs_response_data)
    response = [p for p in parts[at + 1 :] if p.tag == _EXTENSIONS]
    fields = _single_fields(tbs_response_data, index)
    single = [f for f in fields[3:] if f.tag == _EXTENSIONS]
    return CriticalExtensions(
        _critical_in(tbs_response_data, response), _critical_in(tbs_response_data, single)
    )


def _critical_in(data: bytes, wrappers: list[Element]) -> list[str]:
    """Extensions ::= SEQUENCE OF SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
    extnValue OCTET STRING }, inside a [1] EXPLICIT wrapper."""
    if len(wrappers) > 1:
        raise DerError("extensions appear twice")
    found: list[str] = []
    for wrapper in wrappers:
        inner = children(data, wrapper)
        if len(inner) != 1 or inner[0].tag != _SEQUENCE:
            raise DerError("extensions are not a SEQUENCE")
        for extension in children(data, inner[0]):
            fields = children(data, extension) if extension.tag == _SEQUENCE else []
            if len(fields) not in (2, 3) or fields[0].tag != _OID:
                raise DerError("an extension is not (OID, [critical], value)")
            if len(fields) == 3:
                flag = fields[1]
                if flag.tag != _BOOLEAN or flag.end - flag.start != 1:
                    raise DerError("an extension's critical flag is not a BOOLEAN")
                if data[flag.start]:
                    found.append(object_identifier(data, fields[0]))
    return found


def object_identifier(data: bytes, elem: Element) -> str:
    """An OBJECT IDENTIFIER's dotted form."""
    content = data[elem.start : elem.end]
    if not content or content[-1] & 0x80:
        raise DerError("truncated object identifier")
    if len(content) > MAX_OID_BYTES:
        # Decoding is quadratic in an arc's length, and a huge arc overflows str(): bounded.
        raise DerError(f"object identifier longer than {MAX_OID_BYTES} bytes")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


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
