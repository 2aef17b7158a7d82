"""The OCSPStaple's Ready condition, decided without a cluster (the lifecycle tests show the
same statuses on the real API server): True only for a current staple of a good certificate,
every other state False with a reason the README documents, and observedGeneration in the
status and its condition."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocsp_stapler.controller.bodies import SecretRef, SecretView
from ocsp_stapler.controller.preparation import Unprepared
from ocsp_stapler.controller.records import SecretRecord
from ocsp_stapler.controller.statuses import READY_REASONS, metric_status, status_of
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.responses import CertStatus, Signer, Staple

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
README = Path(__file__).resolve().parents[2] / "README.md"


def _staple(status: CertStatus, expires_in: datetime.timedelta) -> Staple:
    return Staple(
        der=b"\x30\x00",
        status=status,
        serial_number=1,
        this_update=NOW - datetime.timedelta(hours=1),
        next_update=NOW + expires_in,
        produced_at=NOW - datetime.timedelta(hours=1),
        signer=Signer.ISSUER,
        expires_at=NOW + expires_in,
    )


def _leaf(not_after: datetime.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_after - datetime.timedelta(days=90))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def _with_leaf(not_after: datetime.datetime) -> Unprepared:
    """A certificate whose preparation waits on a transient problem (no problem reported)."""
    return Unprepared(errors.IssuerNotFound("caIssuers down"), leaf=_leaf(not_after))


def _record(**fields: object) -> SecretRecord:
    view = SecretView(SecretRef("web", "www-tls"), "uid-1", None, None, None, None, None)
    record = SecretRecord(view=view)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


DAY = datetime.timedelta(days=1)
CASES = {
    "good-current": ({"held": _staple(CertStatus.GOOD, DAY)}, "True", "Stapled"),
    "good-current-refresh-failing": (
        {
            "held": _staple(CertStatus.GOOD, DAY),
            "last_error": "timed out",
            "last_reason": "FetchFailed",
        },
        "True",
        "Stapled",
    ),
    "good-expired": ({"held": _staple(CertStatus.GOOD, -DAY)}, "False", "Expired"),
    "good-expiring-this-second": (
        {"held": _staple(CertStatus.GOOD, datetime.timedelta(0))},
        "False",
        "Expired",
    ),
    "revoked-stapled": ({"held": _staple(CertStatus.REVOKED, DAY)}, "False", "Revoked"),
    "revoked-removed": ({"last_status": CertStatus.REVOKED}, "False", "Revoked"),
    "unknown": ({"last_status": CertStatus.UNKNOWN}, "False", "Unknown"),
    "failing-without-staple": (
        {"last_error": "refused", "last_reason": "DestinationRefused"},
        "False",
        "DestinationRefused",
    ),
    "failing-without-reason": ({"last_error": "boom"}, "False", "FetchFailed"),
    "permanent-problem-over-a-good-staple": (
        {
            "held": _staple(CertStatus.GOOD, DAY),
            "preparation": Unprepared(errors.NoResponder("no OCSP URL")),
        },
        "False",
        "NoResponder",
    ),
    "pending": ({}, "False", "Pending"),
    "good-staple-of-an-expired-certificate": (
        {"held": _staple(CertStatus.GOOD, DAY), "preparation": _with_leaf(NOW)},
        "False",
        "CertificateExpired",
    ),
    "good-staple-of-a-current-certificate": (
        {"held": _staple(CertStatus.GOOD, DAY), "preparation": _with_leaf(NOW + DAY)},
        "True",
        "Stapled",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_ready_is_true_only_for_a_current_good_staple(
    case: tuple[dict[str, object], str, str],
) -> None:
    fields, state, reason = case
    status = status_of(_record(**fields), now=NOW, previous=None, generation=3)
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", state, reason)
    assert status["observedGeneration"] == 3
    assert ready["observedGeneration"] == 3


def test_the_transition_time_moves_only_when_the_state_changes() -> None:
    record = _record(held=_staple(CertStatus.GOOD, DAY))
    earlier = "2026-12-01T00:00:00Z"
    kept = status_of(record, now=NOW, previous=("True", earlier), generation=1)
    assert kept["conditions"][0]["lastTransitionTime"] == earlier
    moved = status_of(record, now=NOW, previous=("False", earlier), generation=1)
    assert moved["conditions"][0]["lastTransitionTime"] == "2026-12-05T12:00:00Z"


def _reasons_documented() -> set[str]:
    """The backticked names in the first column of the README's Ready-reason table."""
    text = README.read_text()
    table = text.split("| reason | meaning |", 1)[1].split("\n\n", 1)[0]
    return {
        name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }


def test_the_readme_documents_every_ready_reason() -> None:
    problems = {
        cls.reason
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.OCSPError)
    } - {errors.OCSPError.reason, errors.CertificateUnknown.reason}  # Unknown stands for it
    missing = (set(READY_REASONS) - {"Stapled"} | problems) - _reasons_documented()
    assert missing == set(), f"reasons not in the README's Ready table: {missing}"


METRIC_CASES = {
    "good": ({"held": _staple(CertStatus.GOOD, DAY)}, "good"),
    "good-held-refresh-failing": (
        {"held": _staple(CertStatus.GOOD, DAY), "last_error": "timed out"},
        "Error",
    ),
    "failing-without-staple": ({"last_error": "refused"}, "Error"),
    "revoked-stapled": ({"held": _staple(CertStatus.REVOKED, DAY)}, "revoked"),
    "revoked-removed": ({"last_status": CertStatus.REVOKED}, "revoked"),
    "revoked-then-failing": (
        {"held": _staple(CertStatus.REVOKED, DAY), "last_error": "timed out"},
        "revoked",
    ),
    "unknown": ({"last_status": CertStatus.UNKNOWN, "last_error": "unknown"}, "unknown"),
    "no-responder": ({"preparation": Unprepared(errors.NoResponder("no OCSP URL"))}, "NoResponder"),
    "chain-invalid": ({"preparation": Unprepared(errors.ChainInvalid("bad"))}, "Error"),
    "pending": ({}, None),
}


@pytest.mark.parametrize("case", METRIC_CASES.values(), ids=METRIC_CASES.keys())
def test_the_status_label_the_alerts_read(case: tuple[dict[str, object], str | None]) -> None:
    fields, label = case
    assert metric_status(_record(**fields)) == label
