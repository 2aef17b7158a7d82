"""What the operator remembers about each managed Secret between events.

Memory only: after a restart everything here is rebuilt from the Secrets themselves (the staple
and its certificate annotation), so nothing is lost and no external store is needed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509

from ocsp_stapler.controller.bodies import SecretRef, SecretView
from ocsp_stapler.ocsp.chains import Chain
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.responses import CertStatus, Staple

CertKey = tuple[bytes, int, str]
"""(issuer key hash, serial, override URL): identical certificates share one fetch."""


@dataclass
class SecretRecord:
    view: SecretView
    """The Secret as last seen or written by us."""
    chain: Chain | None = None
    issuer: x509.Certificate | None = None
    issuer_b64: str | None = None
    """The issuer, base64 DER, when it came from caIssuers (neither tls.crt nor ca.crt)."""
    cert_sha256: str | None = None
    cert_key: CertKey | None = None
    problem: OCSPError | None = None
    """A failure retries cannot fix (no responder, bad chain): none until the Secret changes."""
    judged: bool = False
    """Whether the staple found in the Secret has been verified (or removed)."""
    held: Staple | None = None
    """The verified staple the Secret holds now."""
    newest: Staple | None = None
    """The newest response ever verified for this Secret, held or not (never go backwards)."""
    refresh_at: datetime.datetime | None = None
    """None: due now."""
    failures: int = 0
    last_error: str | None = None
    last_attempt: datetime.datetime | None = None
    last_success: datetime.datetime | None = None
    last_status: CertStatus | None = None
    responder_url: str | None = None
    last_event: tuple[str, str] | None = None
    published_digest: int | None = None
    """Hash of the status last published (the dict itself is not kept: memory at 10,000)."""
    published_ready: tuple[str, str] | None = None
    """(status, lastTransitionTime) of the Ready condition last published."""
    staple_object_created: bool = False
    ever_stapled: bool = False

    @property
    def ref(self) -> SecretRef:
        return self.view.ref

    def next_wake(self) -> datetime.datetime | None:
        """The earlier of the refresh time and the held staple's expiry; None: nothing to do.

        A problem (no retries) stops refreshes, but never the removal of an expiring staple.
        """
        refresh = self.refresh_at if self.problem is None else None
        times = [t for t in (refresh, self.held.expires_at if self.held else None) if t]
        return min(times) if times else None
