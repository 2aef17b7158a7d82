"""A response handed back byte for byte (a CDN, for days) is not verified again in full, but
time still judges it: what was verified once cannot have changed, except by expiring."""

from __future__ import annotations

import datetime

import pytest
from simulation.cas import DAY, Behaviour, SimCA

from ocsp_stapler.ocsp.errors import CertIDMismatch, Expired, Stale
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import verify_response

T0 = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _ca() -> SimCA:
    return SimCA("reverify", clock=lambda: T0, behaviour=Behaviour(validity=7 * DAY), start=T0)


def test_the_same_bytes_return_the_held_staple_until_it_expires() -> None:
    ca = _ca()
    leaf = ca.issue("reverify.example")
    der = ca.sign(leaf.serial_number, this_update=T0)
    cert_id = CertID.of(leaf, ca.certificate)
    held = verify_response(der, cert_id=cert_id, issuer=ca.certificate, now=T0)
    again = verify_response(der, cert_id=cert_id, issuer=ca.certificate, now=T0 + DAY, held=held)
    assert again is held
    with pytest.raises(Expired):
        verify_response(der, cert_id=cert_id, issuer=ca.certificate, now=T0 + 7 * DAY, held=held)


def test_other_bytes_are_verified_in_full_and_never_go_backwards() -> None:
    ca = _ca()
    leaf = ca.issue("reverify.example")
    cert_id = CertID.of(leaf, ca.certificate)
    newer = ca.sign(leaf.serial_number, this_update=T0)
    older = ca.sign(leaf.serial_number, this_update=T0 - DAY)
    held = verify_response(newer, cert_id=cert_id, issuer=ca.certificate, now=T0)
    with pytest.raises(Stale):
        verify_response(older, cert_id=cert_id, issuer=ca.certificate, now=T0, held=held)
    other = ca.issue("other.example")  # the held staple's bytes, asked about another serial
    with pytest.raises(CertIDMismatch):
        verify_response(newer, cert_id=CertID.of(other, ca.certificate), issuer=ca.certificate,
                        now=T0, held=held)  # fmt: skip


def test_a_good_answer_as_new_as_a_held_revoked_one_is_refused() -> None:
    """A CA that rounds thisUpdate signs both within one second: a revocation never goes."""
    ca = _ca()
    leaf = ca.issue("reverify.example")
    cert_id = CertID.of(leaf, ca.certificate)
    revoked = ca.sign(leaf.serial_number, this_update=T0, revoked_at=T0)
    good = ca.sign(leaf.serial_number, this_update=T0)
    held = verify_response(revoked, cert_id=cert_id, issuer=ca.certificate, now=T0)
    with pytest.raises(Stale):
        verify_response(good, cert_id=cert_id, issuer=ca.certificate, now=T0, held=held)


def test_the_same_bytes_for_another_issuer_are_verified_in_full() -> None:
    """The re-check shortcut is bound to the CertID it was verified for, issuer included."""
    first, second = _ca(), SimCA("other", clock=lambda: T0, behaviour=Behaviour(), start=T0)
    leaf = first.issue("reverify.example")
    der = first.sign(leaf.serial_number, this_update=T0)
    held = verify_response(
        der, cert_id=CertID.of(leaf, first.certificate), issuer=first.certificate, now=T0
    )
    other = CertID.for_serial(second.certificate, leaf.serial_number)
    with pytest.raises(CertIDMismatch):
        verify_response(der, cert_id=other, issuer=second.certificate, now=T0, held=held)
