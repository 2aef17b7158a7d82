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
    return value.isoformat().replace("+00:00", "Z") if value else None


def refresh_decision(staple: Staple, now: datetime.datetime, policy: RefreshPolicy) -> Decision:
    """When the operator would fetch again after this staple (no jitter: a report, not a plan)."""
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
            "serial": format(s.serial_number, "X") if s else None,
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
            lines.append(f"refresh due: {_iso(self.refresh.at)} ({self.refresh.reason})")
        return "\n".join(lines)
