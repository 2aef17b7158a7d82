"""The OCSPStaple object users read (`kubectl get staples`): pure builders from a record."""

from __future__ import annotations

import datetime
from typing import Any

from ocsp_stapler.controller.records import SecretRecord
from ocsp_stapler.names import CRD_API_VERSION, CRD_KIND, MANAGED_BY, MANAGED_BY_LABEL
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import must_staple, serial_hex
from ocsp_stapler.ocsp.responses import CertStatus


def iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def staple_object(record: SecretRecord) -> dict[str, Any]:
    """A new OCSPStaple named like the Secret, owned by it (deleted with it by the GC)."""
    ref = record.ref
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": CRD_KIND,
        "metadata": {
            "name": ref.name,
            "namespace": ref.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "name": ref.name,
                    "uid": record.view.uid,
                    "blockOwnerDeletion": False,
                    "controller": False,
                }
            ],
        },
        "spec": {"secretName": ref.name},
    }


READY_REASONS = {
    "Stapled": "True: a verified staple of a good certificate is in the Secret, valid now",
    "Revoked": "the CA says the certificate is revoked (its revoked response is stapled, or "
    "removed with revokedAction remove)",
    "CertificateExpired": "the certificate itself has passed its notAfter: clients refuse it, "
    "whatever a responder says",
    "Unknown": "the responder does not know the certificate",
    "Expired": "the staple held has passed its nextUpdate (it is being removed)",
    "Pending": "no staple yet: the first fetch has not finished",
    "WriteRefused": "the API server refuses the operator's writes to the Secret (an immutable "
    "Secret, an admission policy, RBAC): retried with backoff",
}
"""The Ready condition's reasons besides the problem reasons of ``ocsp.errors`` (NoResponder,
ChainInvalid, IssuerNotFound, FetchFailed, DestinationRefused, ...), as the README lists them."""


def _ready(record: SecretRecord, now: datetime.datetime) -> tuple[str, str, str]:
    """(status, reason, message) of the Ready condition: True only for a current staple of
    a good certificate."""
    held = record.held
    if (
        record.problem is None
        and held is not None
        and held.status is CertStatus.GOOD
        and held.expires_at > now
        and not _leaf_expired(record, now)
    ):
        message = f"stapled; valid until {iso(held.expires_at)}"
        if record.last_error:
            message += f"; last refresh failed: {record.last_error}"
        if record.write_refused:
            message += f"; {record.write_refused}"
        return "True", "Stapled", message
    return "False", *_not_ready(record, now)


def _leaf_expired(record: SecretRecord, now: datetime.datetime) -> bool:
    leaf = record.leaf
    return leaf is not None and leaf.not_valid_after_utc <= now


def _not_ready(record: SecretRecord, now: datetime.datetime) -> tuple[str, str]:
    held = record.held
    if record.problem is not None:
        return record.problem.reason, record.problem.message
    if record.write_refused is not None:
        return "WriteRefused", record.write_refused
    held_status = held.status if held else None
    if CertStatus.REVOKED in (record.last_status, held_status):
        served = (
            "the revoked response is stapled"
            if held_status is CertStatus.REVOKED
            else "no revoked response is stapled"
        )
        return "Revoked", f"the certificate is revoked; {served}"
    if record.leaf is not None and _leaf_expired(record, now):
        expired = iso(record.leaf.not_valid_after_utc)
        return "CertificateExpired", f"the certificate expired at {expired}: renew it"
    return _not_stapled(record)


def _not_stapled(record: SecretRecord) -> tuple[str, str]:
    """Why a certificate that is neither refused nor revoked has no current staple."""
    held = record.held
    if held is not None and held.status is CertStatus.GOOD:
        return "Expired", f"the staple expired at {iso(held.expires_at)}"
    if record.last_status is CertStatus.UNKNOWN:
        return "Unknown", "the responder does not know the certificate"
    if record.last_error:
        return record.last_reason or "FetchFailed", record.last_error
    return "Pending", "no staple yet"


def metric_status(record: SecretRecord) -> str | None:
    """The ``status`` label of ``ocsp_stapler_certificate_status`` (what the alerts read):
    ``revoked`` once the CA said so (final: stapled or removed), ``NoResponder``/``Error``
    for a problem or a failing last attempt (with a staple held or not: the fetches are what
    fails), ``unknown`` as the CA answered it, else the held staple's ``good``."""
    held_status = record.held.status if record.held is not None else None
    if CertStatus.REVOKED in (held_status, record.last_status):
        return CertStatus.REVOKED.value
    if isinstance(record.problem, errors.NoResponder):
        return "NoResponder"
    if record.problem is not None or record.write_refused is not None:
        return "Error"
    if record.last_status is CertStatus.UNKNOWN:
        return CertStatus.UNKNOWN.value
    if record.last_error is not None:
        return "Error"
    return held_status.value if held_status is not None else None


def status_of(
    record: SecretRecord,
    *,
    now: datetime.datetime,
    previous: tuple[str, str] | None,
    generation: int,
) -> dict[str, Any]:
    """The status for the OCSPStaple's ``generation`` (its spec never changes what the
    operator does, so every status observes the generation it is written to)."""
    status: dict[str, Any] = {"observedGeneration": generation}
    leaf = record.leaf
    if leaf is not None:
        status["certificate"] = {
            "serial": serial_hex(leaf),
            "subject": leaf.subject.rfc4514_string(),
            "notAfter": iso(leaf.not_valid_after_utc),
            "sha256": record.cert_sha256,
            "mustStaple": must_staple(leaf),
        }
    held = record.held
    cert_status: str | None = None
    if record.problem is not None and record.problem.reason == "NoResponder":
        cert_status = "NoResponder"
    elif held is not None:
        cert_status = held.status.value
    elif record.last_status is not None:
        cert_status = record.last_status.value
    status.update(
        {
            "responderURL": record.responder_url,
            "certStatus": cert_status,
            "thisUpdate": iso(held.this_update) if held else None,
            "nextUpdate": iso(held.next_update) if held else None,
            "producedAt": iso(held.produced_at) if held else None,
            "signer": held.signer.value if held else None,
            "revocationTime": iso(held.revocation_time) if held else None,
            "revocationReason": held.revocation_label if held else None,
            "refreshAt": iso(record.refresh_at) if record.problem is None else None,
            "lastAttempt": iso(record.last_attempt),
            "lastSuccess": iso(record.last_success),
            "consecutiveFailures": record.failures,
            "lastError": record.last_error,
            "observedCertificateSHA256": record.cert_sha256,
        }
    )
    state, reason, message = _ready(record, now)
    # ``previous`` is the Ready condition last published: (status, lastTransitionTime).
    transition = previous[1] if previous is not None and previous[0] == state else iso(now)
    status["conditions"] = [
        {"type": "Ready", "status": state, "reason": reason, "message": message[:1024],
         "lastTransitionTime": transition, "observedGeneration": generation}
    ]  # fmt: skip
    return status  # None values are sent as null: a merge patch then removes the field
