"""Which staple the ingress may serve for a certificate: verified, matching, unexpired.

Checked when a Secret changes (not per handshake): the staple must parse, be a response for
exactly this certificate from its issuer (in the chain), be signed by the issuer or its
delegate, and be unexpired; per handshake only the expiry time is compared with the clock.
A staple that fails any of this is not served: no staple is better than a wrong one.

The bytes come from a tenant's Secret, and the ingress is shared: whatever the parsers raise
(their own ``OCSPError`` or anything else) ends here as a rejected check, never as an
exception that would stop the watcher from publishing every other tenant's configuration.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.errors import OCSPError, printable
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, verify_response


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


def servable_staple(der: bytes | None, chain_pem: bytes, *, now: datetime.datetime) -> StapleCheck:
    """Check a staple against the Secret's chain; never raises."""
    if not der:
        return StapleCheck(None, "no staple in the Secret")
    try:
        chain = assemble_chain(chain_pem)
        if chain.issuer is None:
            return StapleCheck(
                None, "the issuer is not in tls.crt: the staple cannot be checked", rejected=True
            )
        staple = verify_response(
            der, cert_id=CertID.of(chain.leaf, chain.issuer), issuer=chain.issuer, now=now
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
