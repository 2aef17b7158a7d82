"""What the operator remembers about each managed Secret between events.

Memory only: after a restart everything here is rebuilt from the Secrets themselves (the staple
and its certificate annotation), so nothing is lost and no external store is needed. What the
record holds is the input of the lifecycle's decisions (``lifecycle.Facts``) plus what the
status reports; the decisions themselves live in ``lifecycle``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509

from ocsp_stapler.controller.bodies import SecretRef, SecretView
from ocsp_stapler.controller.lifecycle import Found, Rejection
from ocsp_stapler.controller.preparation import CertKey, Preparation, Prepared, Unprepared
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.responses import CertStatus, Staple
from ocsp_stapler.ocsp.stapling import Fetched


@dataclass
class SecretRecord:
    view: SecretView
    """The Secret as last seen or written by us."""
    preparation: Preparation | None = None
    """The certificate, prepared or why not; None until first prepared."""
    found: tuple[str | None, str | None, Found] | None = None
    """(staple, annotation, what is known of them unverified): parsed once per staple."""
    judged: bool = False
    """Whether the staple found in the Secret has been judged (``held`` or ``rejection``)."""
    held: Staple | None = None
    """The verified staple the Secret holds now."""
    rejection: Rejection | None = None
    """Why the staple found in the Secret has to go, when judging said so."""
    answer: Fetched | None = None
    """A verified answer fetched and not yet applied to the Secret."""
    write_refused: str | None = None
    """Why the last write was refused (None once one lands): the status and an Event say it."""
    write_refusals: int = 0
    """Writes in a row the API server refused for another reason than a changed Secret
    (admission, an immutable Secret, an outage): they back off like failed fetches."""
    last_write: datetime.datetime | None = None
    newest: Staple | None = None
    """The newest response ever verified for this Secret, held or not (never go backwards)."""
    refresh_at: datetime.datetime | None = None
    """None: due now."""
    failures: int = 0
    last_error: str | None = None
    last_reason: str | None = None
    """The reason of ``last_error`` (``FetchFailed``, ``DestinationRefused``, ...)."""
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
    staple_generation: int = 1
    """metadata.generation of the OCSPStaple (1 unless someone edited its spec): the status
    says it observed it."""
    ever_stapled: bool = False

    @property
    def ref(self) -> SecretRef:
        return self.view.ref

    @property
    def leaf(self) -> x509.Certificate | None:
        prep = self.preparation
        if isinstance(prep, Prepared):
            return prep.leaf
        return prep.leaf if prep is not None else None

    @property
    def cert_sha256(self) -> str | None:
        return self.preparation.cert_sha256 if self.preparation is not None else None

    @property
    def cert_key(self) -> CertKey | None:
        prep = self.preparation
        return prep.cert_key if isinstance(prep, Prepared) else None

    @property
    def problem(self) -> OCSPError | None:
        """A problem retries cannot fix (no responder, bad chain): none until the Secret
        changes. A transient one (a caIssuers outage, a refused responder) is
        ``last_error``, and retried."""
        prep = self.preparation
        return prep.problem if isinstance(prep, Unprepared) and prep.permanent else None
