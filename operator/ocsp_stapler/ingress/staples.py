"""Which staple the ingress may serve for a certificate: verified, matching, unexpired.

Checked when a Secret changes (not per handshake): the staple must parse, be a response for
exactly this certificate from its issuer, be signed by the issuer or its delegate, and be
unexpired, by the same rules (``VerifyPolicy``, from the same chart values) the operator
applied before writing it; per handshake only the expiry time is compared with the clock. A
staple that fails any of this is not served: no staple is better than a wrong one.

The issuer is found where the operator found it: in tls.crt, in ca.crt, or, when the operator
downloaded it from caIssuers, in the ``staple-issuer`` annotation it wrote next to the staple
(the Secret's owner could write any of these, so the annotation is trusted no more and no less
than tls.crt: the check is against mistakes and staleness, clients verify the chain).

The bytes come from a tenant's Secret, and the ingress is shared: whatever the parsers raise
(their own ``OCSPError`` or anything else) ends here as a rejected check, never as an
exception that would stop the supervisor from publishing every other tenant's configuration.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ocsp_stapler.ocsp.chains import assemble_chain, find_issuer, load_certificates
from ocsp_stapler.ocsp.errors import OCSPError, printable
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, VerifyPolicy, verify_response


@dataclass(frozen=True)
class ServableStaple:
    der: bytes
    expires_at: float
    """Unix time after which it is not served."""
    status: str


@dataclass(frozen=True)
class StapleCheck:
    """The verdict on a Secret's staple."""

    staple: ServableStaple | None
    """What to serve, or None."""
    note: str
    """A short reason for logs ("ok", "no staple in the Secret", why it was refused)."""
    rejected: bool = False
    """A staple was there and is refused (a problem worth a Warning), as opposed to none, or
    one that honestly says unknown."""


def servable_staple(
    der: bytes | None,
    chain_pem: bytes,
    *,
    now: datetime.datetime,
    ca_pem: bytes | None = None,
    issuer_der: bytes | None = None,
    policy: VerifyPolicy | None = None,
) -> StapleCheck:
    """Check a staple against the Secret's chain (tls.crt, ca.crt, the operator's
    staple-issuer annotation), by ``policy``; never raises."""
    if not der:
        return StapleCheck(None, "no staple in the Secret")
    try:
        chain = assemble_chain(chain_pem, ca_pem)
        issuer = chain.issuer
        if issuer is None and issuer_der:
            noted = load_certificates(issuer_der, what="the staple-issuer annotation")
            issuer = find_issuer(chain.leaf, noted)
        if issuer is None:
            return StapleCheck(
                None,
                "the issuer is in neither tls.crt, ca.crt nor the staple-issuer annotation: "
                "the staple cannot be checked",
                rejected=True,
            )
        staple = verify_response(
            der,
            cert_id=CertID.of(chain.leaf, issuer),
            issuer=issuer,
            now=now,
            policy=policy or VerifyPolicy(),
        )
    except OCSPError as exc:
        return StapleCheck(None, str(exc), rejected=True)
    except Exception as exc:  # hostile bytes end in a verdict, whatever raised
        why = printable(f"unreadable staple ({type(exc).__name__}: {exc})")
        return StapleCheck(None, why, rejected=True)
    if staple.status is CertStatus.UNKNOWN:
        return StapleCheck(None, "the staple says unknown")
    return StapleCheck(
        ServableStaple(
            der=der, expires_at=staple.expires_at.timestamp(), status=staple.status.value
        ),
        "ok",
    )
