"""What `ocsp-stapler check` and `verify` print: one report, as text for people or JSON.

Kept apart from the click commands so the same fields (and names) can serve the operator's
status and logs, and so the report is testable without a terminal.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.responses import CertStatus, Staple
from ocsp_stapler.ocsp.schedules import Decision, RefreshPolicy, after_failure, after_success

EXIT_GOOD, EXIT_REVOKED, EXIT_FAILED, EXIT_UNKNOWN = 0, 1, 2, 3

_EXIT_BY_STATUS = {
    CertStatus.GOOD: EXIT_GOOD,
    CertStatus.REVOKED: EXIT_REVOKED,
    CertStatus.UNKNOWN: EXIT_UNKNOWN,
}


def _iso(value: datetime.datetime | None) -> str | None:
    """To the second: a report is read by people (and OCSP times have no fractions)."""
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z")


REFRESH_REASONS = {
    "Midpoint": "half-way through the response's validity",
    "Margin": "the safety margin before nextUpdate",
    "MaxInterval": "the longest refresh interval",
    "HttpCache": "when the responder's HTTP caching says a newer response can exist",
    "SameResponse": "backing off: the responder keeps handing back this response",
    "Late": "backing off: the response is already past its refresh point",
    "ExpiryBound": "before the response expires",
    "Backoff": "retrying after a failure",
}
"""The refresh decision's reason, in words."""


def refresh_decision(staple: Staple, now: datetime.datetime, policy: RefreshPolicy) -> Decision:
    """When the operator would fetch again after this staple (no jitter: a report, not a plan)."""
    try:
        return _refresh_decision(staple, now, policy)
    except OverflowError:  # a time at the end of the calendar (``verify --at 9999-...``)
        return Decision(at=staple.expires_at, reason="ExpiryBound")


def _refresh_decision(staple: Staple, now: datetime.datetime, policy: RefreshPolicy) -> Decision:
    if staple.status is CertStatus.UNKNOWN:
        return after_failure(failures=1, now=now, expires_at=None, policy=policy, rand=lambda: 0.0)
    return after_success(
        this_update=staple.this_update,
        expires_at=staple.expires_at,
        now=now,
        policy=policy,
        rand=lambda: 0.0,
    )


@dataclass(frozen=True)
class Report:
    staple: Staple | None
    error: OCSPError | None
    responder_url: str | None
    refresh: Decision | None
    leaf: str | None = None
    """Which certificate was taken as the leaf (subject, serial, where in which file)."""
    certificate_warning: str | None = None
    """Why the certificate itself is not valid now (expired, not yet valid), if so."""

    @property
    def exit_code(self) -> int:
        if self.staple is None:
            return EXIT_FAILED
        return _EXIT_BY_STATUS[self.staple.status]

    def as_dict(self) -> dict[str, object]:
        s = self.staple
        return {
            "status": s.status.value if s else None,
            "this_update": _iso(s.this_update) if s else None,
            "next_update": _iso(s.next_update) if s else None,
            "produced_at": _iso(s.produced_at) if s else None,
            "responder_url": self.responder_url,
            "signer": s.signer.value if s else None,
            "revocation_time": _iso(s.revocation_time) if s else None,
            "revocation_reason": s.revocation_reason if s else None,
            "revocation_reason_code": s.revocation_reason_code if s else None,
            "refresh_at": _iso(self.refresh.at) if self.refresh else None,
            "refresh_reason": REFRESH_REASONS.get(self.refresh.reason, self.refresh.reason)
            if self.refresh
            else None,
            "serial": format(s.serial_number, "X") if s else None,
            "leaf": self.leaf,
            "certificate_warning": self.certificate_warning,
            "error": str(self.error) if self.error else None,
            "reason": self.error.reason if self.error else None,
        }

    def as_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def as_text(self) -> str:
        s = self.staple
        if s is None:
            return f"error: {self.error}"
        signer = "the issuer" if s.signer.value == "issuer" else "a delegated responder"
        lines = [
            f"status:      {s.status.value}",
            f"serial:      {s.serial_number:X}",
        ]
        if self.leaf:
            lines.append(f"leaf:        {self.leaf}")
        if self.certificate_warning:
            lines.append(f"warning:     {self.certificate_warning}")
        if s.status is CertStatus.REVOKED:
            label = f" ({s.revocation_label})" if s.revocation_label else ""
            lines.append(f"revoked at:  {_iso(s.revocation_time)}{label}")
        if self.responder_url:
            lines.append(f"responder:   {self.responder_url}")
        lines += [
            f"this update: {_iso(s.this_update)}",
            f"next update: {_iso(s.next_update) or 'none (newer information is always available)'}",
            f"produced at: {_iso(s.produced_at)}",
            f"signed by:   {signer}",
        ]
        if self.refresh:
            why = REFRESH_REASONS.get(self.refresh.reason, self.refresh.reason)
            lines.append(f"refresh due: {_iso(self.refresh.at)} ({why})")
        return "\n".join(lines)
