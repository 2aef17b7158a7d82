"""The lifecycle's decisions, without a cluster: examples for each rule, and properties over
structured facts (prepared or not, staples held, found, fetched, expired or not).

``lifecycle.decide`` is pure, so these run in milliseconds; what only the API server can show
(patch preconditions, watch events) is in the end-to-end tests, and the month-long behaviour
in test_simulation.
"""

from __future__ import annotations

import datetime
import functools

from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from simulation.cas import Behaviour, SimCA

from ocsp_stapler.controller.lifecycle import (
    Discard,
    Facts,
    Fetch,
    Found,
    Judge,
    Prepare,
    Refuse,
    Rejection,
    Remove,
    Wait,
    Withdraw,
    Write,
    decide,
    next_wake,
)
from ocsp_stapler.controller.preparation import Prepared, Unprepared
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.responses import CertStatus, Signer, Staple
from ocsp_stapler.ocsp.stapling import Fetched

T0 = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)
SHA = "ab" * 32


@functools.cache
def _pki() -> tuple[x509.Certificate, x509.Certificate]:
    ca = SimCA("decisions", clock=lambda: T0, behaviour=Behaviour(), start=T0)
    return ca.issue("decisions.example"), ca.certificate


def prepared() -> Prepared:
    leaf, issuer = _pki()
    return Prepared(
        leaf=leaf, issuer=issuer, cert_sha256=SHA, cert_key=(b"k", leaf.serial_number, ""),
        issuer_b64=None,
    )  # fmt: skip


def staple(status: CertStatus = CertStatus.GOOD, *, expires: datetime.timedelta = 48 * H) -> Staple:
    return Staple(
        der=b"\x30\x00", status=status, serial_number=1, this_update=T0 - H, next_update=T0 + expires,
        produced_at=T0 - H, signer=Signer.ISSUER, expires_at=T0 + expires,
    )  # fmt: skip


def fetched(status: CertStatus = CertStatus.GOOD) -> Fetched:
    return Fetched(staple=staple(status), responder_url="http://ocsp.example", issuer=_pki()[1])


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {
        "now": T0, "preparation": prepared(), "found": None, "judged": False, "held": None,
        "rejection": None, "answer": None, "refresh_at": T0 + H,
        "revoked_action": "staple",
    }  # fmt: skip
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def retrying(at: datetime.datetime, cert_sha256: str | None = SHA) -> Unprepared:
    return Unprepared(
        problem=errors.IssuerNotFound("caIssuers is down"), cert_sha256=cert_sha256, retry_at=at
    )


# ------------------------------------------------------------------------------ examples


def test_an_unprepared_certificate_is_prepared_and_a_transient_problem_retried_when_due() -> None:
    assert decide(facts(preparation=None)) == Prepare()
    assert decide(facts(preparation=retrying(T0 + H))) == Wait(T0 + H)
    assert decide(facts(preparation=retrying(T0))) == Prepare()


def test_a_staple_of_another_certificate_goes_even_before_the_issuer_is_known() -> None:
    action = decide(facts(preparation=retrying(T0 + H), found=Found(cert_sha256="cd" * 32)))
    assert isinstance(action, Remove)
    assert action.type == "Normal"
    assert "another certificate" in action.message


def test_a_staple_that_can_never_be_judged_goes() -> None:
    never = Unprepared(problem=errors.ChainInvalid("tls.crt is not a certificate"))
    action = decide(facts(preparation=never, found=Found(cert_sha256=SHA)))
    assert isinstance(action, Remove)
    assert "cannot be judged" in action.message


def test_while_the_issuer_is_unknown_a_staple_goes_at_the_latest_expiry_it_claims() -> None:
    """Bug 1: a caIssuers outage kept a staple in the Secret 7 hours (and more) past expiry."""
    found = Found(cert_sha256=SHA, claimed_expiry=T0 + 2 * H)
    waiting = facts(preparation=retrying(T0 + 5 * H), found=found)
    assert decide(waiting) == Wait(T0 + 2 * H)  # the expiry comes before the retry
    action = decide(facts(now=T0 + 2 * H, preparation=retrying(T0 + 5 * H), found=found))
    assert isinstance(action, Remove)
    assert action.reason == "StapleExpired"
    unusable = Found(cert_sha256=SHA, malformed="not an OCSP response")
    assert isinstance(decide(facts(preparation=retrying(T0 + H), found=unusable)), Remove)


def test_a_found_staple_is_judged_then_kept_or_removed() -> None:
    found = Found(cert_sha256=SHA, claimed_expiry=T0 + 48 * H)
    assert decide(facts(found=found)) == Judge(prepared())
    rejected = facts(found=found, judged=True, rejection=Rejection("Warning", "bad signature"))
    assert decide(rejected) == Remove("Warning", "StapleRemoved", "bad signature")
    kept = facts(found=found, judged=True, held=staple())
    assert decide(kept) == Wait(T0 + H)  # the refresh comes before the expiry


def test_a_held_staple_goes_at_its_expiry_even_while_refreshes_fail() -> None:
    found = Found(cert_sha256=SHA)
    held = staple(expires=2 * H)
    failing = facts(found=found, judged=True, held=held, refresh_at=T0 + 3 * H)
    assert decide(failing) == Wait(T0 + 2 * H)
    action = decide(
        facts(now=T0 + 2 * H, found=found, judged=True, held=held, refresh_at=T0 + 3 * H)
    )
    assert isinstance(action, Remove)
    assert action.reason == "StapleExpired"


def test_a_fetched_answer_is_written_withdrawn_or_refused() -> None:
    good, revoked, unknown = (fetched(s) for s in CertStatus)
    assert decide(facts(answer=good)) == Write(good, prepared())
    assert decide(facts(answer=revoked)) == Write(revoked, prepared())
    assert decide(facts(answer=revoked, revoked_action="remove")) == Withdraw(revoked, prepared())
    assert decide(facts(answer=unknown)) == Refuse(unknown)


def test_a_due_refresh_is_a_fetch() -> None:
    assert decide(facts(refresh_at=None)) == Fetch(prepared())
    assert decide(facts(refresh_at=T0)) == Fetch(prepared())


def test_an_answer_that_expired_before_it_could_be_written_is_discarded() -> None:
    """The API server refused writes for longer than the answer lived: never write it."""
    late = facts(now=T0 + 49 * H, answer=fetched(), refresh_at=None)
    assert decide(late) == Discard(fetched())


# ---------------------------------------------------------------------------- properties

offsets = st.integers(min_value=-72, max_value=72).map(lambda h: T0 + h * H)
maybe_offsets = st.one_of(st.none(), offsets)


@st.composite
def any_facts(draw: st.DrawFn) -> Facts:
    preparation = draw(
        st.sampled_from(["none", "prepared", "retrying", "permanent", "foreign-retrying"])
    )
    prep: Prepared | Unprepared | None = {
        "none": None,
        "prepared": prepared(),
        "retrying": retrying(draw(offsets)),
        "permanent": Unprepared(problem=errors.NoResponder("none"), cert_sha256=SHA),
        "foreign-retrying": retrying(draw(offsets), cert_sha256=None),
    }[preparation]
    found = draw(
        st.one_of(
            st.none(),
            st.builds(
                Found,
                cert_sha256=st.sampled_from([SHA, "cd" * 32, None]),
                claimed_expiry=maybe_offsets,
                malformed=st.sampled_from([None, "garbage"]),
            ),
        )
    )
    judged = draw(st.booleans()) and found is not None
    held = None
    rejection = None
    if judged:
        if draw(st.booleans()):
            held = staple(
                draw(st.sampled_from([CertStatus.GOOD, CertStatus.REVOKED])),
                expires=draw(st.integers(-72, 72)) * H,
            )
        else:
            rejection = Rejection("Warning", "rejected")
    return facts(
        now=T0,
        preparation=prep,
        found=found,
        judged=judged,
        held=held,
        rejection=rejection,
        answer=draw(st.one_of(st.none(), st.sampled_from(list(CertStatus)).map(fetched))),
        refresh_at=draw(maybe_offsets),
        revoked_action=draw(st.sampled_from(["staple", "remove"])),
    )


@given(any_facts())
def test_a_wait_is_always_for_a_future_time(f: Facts) -> None:
    """Nothing due now is left waiting: a Wait's time is in the future, or there is none."""
    action = decide(f)
    if isinstance(action, Wait):
        assert action.until is None or action.until > f.now
        assert action.until == next_wake(f)


@given(any_facts())
def test_nothing_is_fetched_judged_or_written_without_a_prepared_certificate(f: Facts) -> None:
    action = decide(f)
    if isinstance(action, Fetch | Judge | Write | Withdraw | Refuse):
        assert isinstance(f.preparation, Prepared)


@given(any_facts())
def test_an_expired_staple_is_never_kept_waiting(f: Facts) -> None:
    """Whatever else holds, a staple past its expiry in the Secret is removed first (after
    preparing or judging it, which come first only to tell the expiry more precisely)."""
    if f.found is None:
        return
    expiry = f.held.expires_at if f.held is not None else None
    if not f.judged:
        expiry = f.found.claimed_expiry
    if expiry is not None and expiry <= f.now:
        assert isinstance(decide(f), Prepare | Judge | Remove)


@given(any_facts())
def test_unknown_is_never_written_and_revoked_is_withdrawn_only_when_configured(f: Facts) -> None:
    action = decide(f)
    if isinstance(action, Write):
        assert action.answer.staple.valid_at(f.now)  # never an expired staple
        assert action.answer.staple.status is not CertStatus.UNKNOWN
        assert not (
            action.answer.staple.status is CertStatus.REVOKED and f.revoked_action == "remove"
        )
    if isinstance(action, Withdraw):
        assert action.answer.staple.status is CertStatus.REVOKED
        assert f.revoked_action == "remove"
