"""Certificates as users have them: PEM, DER or PKCS#7, bundles in any order, named by file.

A Secret's ``tls.crt`` is leaf-first by convention (``chains.assemble_chain`` insists on it);
a file someone hands to ``ocsp-stapler check`` is whatever their CA or their tooling wrote:
``fullchain.pem``, a ``.p7b``, a lone DER ``.cer``, the intermediate first. Here the leaf is
found by the chain itself (the certificate that issued none of the others, a non-CA one
first), and the report says which one was taken, so a wrong pick is seen, not guessed.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

from cryptography import x509

from ocsp_stapler.ocsp.chains import (
    MAX_PEM_BYTES,
    Chain,
    find_issuer,
    is_ca,
    load_certificates,
    signed_by,
)
from ocsp_stapler.ocsp.errors import ChainInvalid, printable


@dataclass(frozen=True)
class UserChain:
    chain: Chain
    leaf_note: str
    """Which certificate was taken as the leaf, and where it was found."""


def read_certificates(data: bytes, *, what: str) -> list[x509.Certificate]:
    """Every certificate in one user file (PEM, DER, PKCS#7 in PEM or DER), bounded."""
    if len(data) > MAX_PEM_BYTES:
        raise ChainInvalid(f"{what} is {len(data)} bytes, more than {MAX_PEM_BYTES}")
    return load_certificates(data, what=what)  # bounded to MAX_CERTIFICATES there


def _describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string() or '(empty subject)'}, serial {cert.serial_number:X}"


def pick_leaf(certs: list[x509.Certificate], *, what: str) -> tuple[x509.Certificate, str]:
    """The leaf of a bundle in any order: a certificate that issued none of the others (a
    non-CA one before a CA), the first such in file order; and a note saying which."""
    issued_none = [
        c for c in certs if not any(o is not c and signed_by(o, c) for o in certs)
    ]  # fmt: skip
    ends = [c for c in issued_none if not is_ca(c)] or issued_none
    if not ends:  # every certificate issued another: a loop of cross-signs
        raise ChainInvalid(f"{what}: no certificate stands at the end of the chain")
    leaf = ends[0]
    position = next(i for i, c in enumerate(certs) if c is leaf) + 1
    where = f"certificate {position} of {len(certs)} in {what}" if len(certs) > 1 else what
    note = printable(f"{_describe(leaf)} ({where})")
    if is_ca(leaf):
        note += "; it is a CA certificate: no end-entity certificate in the file"
    if len(ends) > 1:
        note += f"; {len(ends) - 1} more could be leaves, pass one per file to choose"
    return leaf, note


def read_user_chain(
    data: bytes, *, what: str, issuer_data: bytes | None = None, issuer_what: str = "--issuer"
) -> UserChain:
    certs = read_certificates(data, what=what)
    leaf, note = pick_leaf(certs, what=what)
    others = [c for c in certs if c is not leaf]
    if issuer_data is not None:
        others += read_certificates(issuer_data, what=issuer_what)
    chain = Chain(leaf=leaf, issuer=find_issuer(leaf, others), others=tuple(others))
    return UserChain(chain=chain, leaf_note=note)


def validity_warning(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    """Why the certificate itself would not be accepted by clients now, if it would not."""
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < not_before:
        return f"the certificate is not valid yet (from {_second(not_before)})"
    if now > not_after:
        return f"the certificate expired at {_second(not_after)}"
    return None


def _second(value: datetime.datetime) -> str:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def staple_hint(data: bytes) -> str | None:
    """A hint when a staple file is PEM or base64 text instead of DER (``kubectl get secret
    -o jsonpath`` prints base64)."""
    text = data.strip()
    if text.startswith(b"-----BEGIN CERTIFICATE"):
        return "the file is a certificate, not an OCSP response (--response and --cert swapped?)"
    if text.startswith(b"-----BEGIN"):
        return "the file is PEM text; OCSP responses are DER: strip the armour and base64 -d it"
    try:
        decoded = base64.b64decode(b"".join(text.split()), validate=True)  # wrapped lines too
    except (binascii.Error, ValueError):
        return None
    if decoded[:1] == b"\x30":
        return "the file is base64 text (as kubectl prints Secret data): decode it with base64 -d"
    return None
