"""Which staple the ingress may serve for a certificate: verified, matching, unexpired.

Checked when a Secret changes (not per handshake): the staple must parse, be a response for
exactly this certificate from its issuer (in the chain), be signed by the issuer or its
delegate, and be unexpired; per handshake only the expiry time is compared with the clock.
A staple that fails any of this is not served: no staple is better than a wrong one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.responses import CertStatus, cert_id_in, verify_response


@dataclass(frozen=True)
class ServableStaple:
    der: bytes
    expires_at: float
    """Unix time after which it is not served."""
    status: str


def servable_staple(
    der: bytes | None, chain_pem: bytes, *, now: datetime.datetime
) -> tuple[ServableStaple | None, str]:
    """The staple to serve (or None) and a short reason for logs."""
    if not der:
        return None, "no staple in the Secret"
    try:
        chain = assemble_chain(chain_pem)
        if chain.issuer is None:
            return None, "the issuer is not in tls.crt: the staple cannot be checked"
        staple = verify_response(
            der, cert_id=cert_id_in(der, chain.leaf, chain.issuer), issuer=chain.issuer, now=now
        )
    except OCSPError as exc:
        return None, str(exc)
    if staple.status is CertStatus.UNKNOWN:
        return None, "the staple says unknown"
    return ServableStaple(
        der=der, expires_at=staple.expires_at.timestamp(), status=staple.status.value
    ), "ok"
