"""Preparing a Secret's certificate for stapling: a value that is complete or says why not.

Before any staple can be judged or fetched the operator needs the leaf, its issuer and the
responder to ask. Parsing ``tls.crt`` is local and either works or never will (until the
Secret changes); finding the issuer may need a caIssuers download, which can fail for a while.
So preparation ends in one of two values, never in a half-filled record:

* ``Prepared``: chain (leaf and issuer), the certificate's digest, the key identical
  certificates share a fetch under, and the issuer annotation to write when the issuer came
  from caIssuers;
* ``Unprepared``: the problem, whether a retry can fix it, and the leaf's digest when
  ``tls.crt`` parsed (so a staple of another certificate is still recognised and removed).

The retry time of a transient problem is the lifecycle's business (``lifecycle``), not this
module's: preparing is done again from scratch each time, so a short caIssuers outage can
never leave a Secret half prepared (issue #14, bug 1).
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ocsp_stapler.controller.bodies import SecretView, check_responder_override, decode
from ocsp_stapler.names import RESPONDER_URL
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import Chain, assemble_chain, sha256_hex
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.stapling import Attempt, resolve_issuer, responder_urls
from ocsp_stapler.ocsp.transport import Fetch

CertKey = tuple[bytes, int, str]
"""(issuer key hash, serial, override URL): identical certificates share one fetch."""


@dataclass(frozen=True)
class Prepared:
    leaf: x509.Certificate
    issuer: x509.Certificate
    """Only the leaf and its issuer are kept of the chain (memory at 10,000 Secrets)."""
    cert_sha256: str
    cert_key: CertKey
    issuer_b64: str | None
    """The issuer as the staple-issuer annotation holds it, when the Secret does not."""

    @property
    def chain(self) -> Chain:
        return Chain(leaf=self.leaf, issuer=self.issuer)

    @property
    def override_url(self) -> str | None:
        return self.cert_key[2] or None


@dataclass(frozen=True)
class Unprepared:
    problem: errors.OCSPError
    leaf: x509.Certificate | None = None
    cert_sha256: str | None = None
    retry_at: datetime.datetime | None = None
    """When to prepare again (set by the lifecycle for retryable problems); None: never, until
    the Secret changes."""

    @property
    def permanent(self) -> bool:
        return not self.problem.retryable


Preparation = Prepared | Unprepared


class Issuers:
    """One object per issuer, and one annotation string per issuer: thousands of Secrets
    share a handful of issuers (memory at 10,000 Secrets)."""

    def __init__(self) -> None:
        self._certificates: dict[bytes, x509.Certificate] = {}
        self._annotations: dict[bytes, str] = {}

    def intern(self, issuer: x509.Certificate) -> x509.Certificate:
        return self._certificates.setdefault(issuer.fingerprint(hashes.SHA256()), issuer)

    def annotation(self, issuer: x509.Certificate) -> str:
        key = issuer.fingerprint(hashes.SHA256())
        found = self._annotations.get(key)
        if found is None:
            found = base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode()
            self._annotations[key] = found
        return found


def _parse(view: SecretView) -> tuple[Chain, str | None]:
    """The chain and the responder override, or the permanent problem with them."""
    crt = decode(view.crt_b64)
    if not crt:
        raise errors.ChainInvalid("tls.crt is missing or not base64")
    ca = decode(view.ca_b64) if view.ca_b64 else None
    chain = assemble_chain(crt, ca)
    try:
        override = check_responder_override(view.override_url)
    except ValueError as exc:
        raise errors.InvalidAnnotation(str(exc)) from None
    return chain, override


async def prepare(
    view: SecretView,
    *,
    fetch: Fetch,
    attempt: Attempt,
    issuers: Issuers,
) -> Preparation:
    """Parse the Secret's chain and find the issuer: ``Prepared`` or ``Unprepared``."""
    try:
        chain, override = _parse(view)
    except errors.OCSPError as exc:
        return Unprepared(problem=exc)
    return await prepare_chain(chain, override, fetch=fetch, attempt=attempt, issuers=issuers)


async def prepare_chain(
    chain: Chain,
    override: str | None,
    *,
    fetch: Fetch,
    attempt: Attempt,
    issuers: Issuers,
) -> Preparation:
    """Find the responder and the issuer of a parsed chain (a Secret's, or a file's)."""
    leaf, cert_sha256 = chain.leaf, sha256_hex(chain.leaf)
    if not responder_urls(leaf, override):
        problem = errors.NoResponder(
            "the certificate names no OCSP responder (AIA id-ad-ocsp) and no "
            f"{RESPONDER_URL} annotation is set; nothing to staple"
        )
        return Unprepared(problem=problem, leaf=leaf, cert_sha256=cert_sha256)
    try:
        issuer = issuers.intern(await resolve_issuer(chain, fetch=fetch, attempt=attempt))
    except errors.OCSPError as exc:
        return Unprepared(problem=exc, leaf=leaf, cert_sha256=cert_sha256)
    key_hash = CertID.for_serial(issuer, leaf.serial_number).issuer_key_hash
    return Prepared(
        leaf=leaf,
        issuer=issuer,
        cert_sha256=cert_sha256,
        cert_key=(key_hash, leaf.serial_number, override or ""),
        issuer_b64=None if chain.issuer is not None else issuers.annotation(issuer),
    )
