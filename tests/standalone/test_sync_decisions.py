"""What the sync sidecar hands consumers (``sync.choose``), decided without files or servers:
the newest valid staple of the current certificate, never an older one while the handed one is
valid, and "none" the moment the handed one expires or belongs to a replaced certificate."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from devcluster.pki import TestPKI

from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, Staple, verify_response
from ocsp_stapler.standalone.sync import HandedOver, Keep, Verdict, choose

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
CERT, OTHER = "a" * 64, "b" * 64


@pytest.fixture(scope="module")
def staple(pki: TestPKI) -> Staple:
    leaf = pki.leaf("decisions.example.test")
    now = datetime.datetime.now(datetime.UTC)
    der = pki.response(leaf, this_update=now - HOUR, next_update=now + HOUR)
    return verify_response(der, cert_id=CertID.of(leaf.cert, pki.intermediate.cert),
                           issuer=pki.intermediate.cert, now=now)  # fmt: skip


def _at(staple: Staple, this_update: datetime.datetime, **changes: object) -> Staple:
    return dataclasses.replace(
        staple, this_update=this_update, expires_at=this_update + 24 * HOUR, **changes
    )


def test_at_start_consumers_are_told_once_whatever_there_is(staple: Staple) -> None:
    good = _at(staple, NOW - HOUR)
    assert choose(Verdict(CERT, good), None, NOW) is good
    assert choose(Verdict(CERT, None, "no staple"), None, NOW) is None
    assert choose(Verdict(None, None, "tls.crt is missing"), None, NOW) is None


def test_a_newer_staple_is_handed_over_and_an_older_or_the_same_kept_out(staple: Staple) -> None:
    held = _at(staple, NOW - 2 * HOUR)
    handed = HandedOver(held, CERT)
    newer, older = _at(staple, NOW - HOUR), _at(staple, NOW - 3 * HOUR)
    assert choose(Verdict(CERT, newer), handed, NOW) is newer
    assert isinstance(choose(Verdict(CERT, older), handed, NOW), Keep)
    assert isinstance(choose(Verdict(CERT, held), handed, NOW), Keep)
    assert isinstance(choose(Verdict(CERT, None, "unreadable"), handed, NOW), Keep)


def test_a_revocation_signed_in_the_same_second_is_handed_over(staple: Staple) -> None:
    held = _at(staple, NOW - HOUR)
    revoked = _at(staple, NOW - HOUR, status=CertStatus.REVOKED)
    assert choose(Verdict(CERT, revoked), HandedOver(held, CERT), NOW) is revoked


def test_the_handed_staple_goes_at_its_expiry_and_with_its_certificate(staple: Staple) -> None:
    held = _at(staple, NOW - HOUR)
    at_expiry = held.expires_at
    assert choose(Verdict(CERT, None, rejected=True), HandedOver(held, CERT), at_expiry) is None
    assert choose(Verdict(CERT, held), HandedOver(held, CERT), at_expiry) is None
    assert choose(Verdict(OTHER, None), HandedOver(held, CERT), NOW) is None
    # Of the replaced certificate, even when newer than nothing: the new one's own is taken.
    mine = _at(staple, NOW - 5 * HOUR)
    assert choose(Verdict(OTHER, mine), HandedOver(held, CERT), NOW) is mine


def test_none_is_said_once(staple: Staple) -> None:
    assert isinstance(choose(Verdict(CERT, None), HandedOver(None, CERT), NOW), Keep)
    expired = _at(staple, NOW - 30 * HOUR)
    assert isinstance(choose(Verdict(CERT, expired), HandedOver(None, CERT), NOW), Keep)
    # A certificate that cannot be read: what was handed for the old one still goes.
    assert choose(Verdict(None, None), HandedOver(_at(staple, NOW), CERT), NOW) is None


def test_a_withdrawn_staple_takes_the_handed_one_away_and_a_rejected_one_does_not(
    staple: Staple,
) -> None:
    """The operator removed the staple from the Secret (or the CA says revoked and the
    policy is remove): consumers must staple nothing now, not the last good answer until its
    expiry. Garbage or another certificate's staple in the file changes nothing."""
    handed = HandedOver(_at(staple, NOW - HOUR), CERT)
    assert choose(Verdict(CERT, None, "no staple", withdrawn=True), handed, NOW) is None
    assert isinstance(choose(Verdict(CERT, None, "garbled", rejected=True), handed, NOW), Keep)
    told_none = HandedOver(None, CERT)
    assert isinstance(choose(Verdict(CERT, None, withdrawn=True), told_none, NOW), Keep)
