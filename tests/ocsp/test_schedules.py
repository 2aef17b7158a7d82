"""When the next fetch happens: properties over every input, and the examples that matter."""

from __future__ import annotations

import datetime
import itertools

from hypothesis import given
from hypothesis import strategies as st

from ocsp_stapler.ocsp.schedules import RefreshPolicy, after_failure, after_success

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
POLICY = RefreshPolicy()
S, H, D = datetime.timedelta(seconds=1), datetime.timedelta(hours=1), datetime.timedelta(days=1)

seconds = st.integers(min_value=1, max_value=30 * 24 * 3600)
dice = st.floats(min_value=0.0, max_value=0.999999)


@given(validity=seconds, elapsed_fraction=st.floats(0.0, 0.999), rand=dice)
def test_success_refresh_is_never_past_and_always_before_expiry(
    validity: int, elapsed_fraction: float, rand: float
) -> None:
    this_update = T0
    expires_at = T0 + validity * S
    now = this_update + (expires_at - this_update) * elapsed_fraction
    d = after_success(
        this_update=this_update, expires_at=expires_at, now=now, policy=POLICY, rand=lambda: rand
    )
    assert now <= d.at < expires_at


@given(
    failures=st.integers(min_value=1, max_value=200),
    left=st.one_of(st.none(), seconds),
    rand=dice,
)
def test_retry_is_never_past_and_before_a_held_expiry(
    failures: int, left: int | None, rand: float
) -> None:
    expires_at = None if left is None else T0 + left * S
    d = after_failure(
        failures=failures, now=T0, expires_at=expires_at, policy=POLICY, rand=lambda: rand
    )
    assert d.at > T0
    if expires_at is not None:
        assert d.at < expires_at
    assert d.at - T0 <= POLICY.backoff_cap


def test_week_long_response_refreshes_at_the_midpoint() -> None:
    d = after_success(
        this_update=T0, expires_at=T0 + 7 * D, now=T0 + 10 * S, policy=POLICY, rand=lambda: 0.0
    )
    assert (d.at, d.reason) == (T0 + 3.5 * D, "Midpoint")


def test_jitter_only_moves_earlier_and_by_at_most_ten_percent() -> None:
    now = T0
    early = after_success(
        this_update=T0, expires_at=T0 + 10 * D, now=now, policy=POLICY, rand=lambda: 0.999999
    )
    assert T0 + 5 * D - 0.5 * D <= early.at < T0 + 5 * D


def test_short_lived_response_obeys_the_margin_but_not_past_half() -> None:
    """90 minutes of validity with a 1 h margin: refresh at 45 min (half), never at once."""
    d = after_success(
        this_update=T0, expires_at=T0 + 90 * 60 * S, now=T0, policy=POLICY, rand=lambda: 0.0
    )
    assert d.at == T0 + 45 * 60 * S


def test_late_arrival_still_waits_the_minimum() -> None:
    """A response fetched just before its refresh point is not re-fetched in a tight loop."""
    d = after_success(
        this_update=T0, expires_at=T0 + 2 * D, now=T0 + D + S, policy=POLICY, rand=lambda: 0.0
    )
    assert d.at == T0 + D + S + POLICY.min_wait


def test_backoff_doubles_from_30s_to_an_hour() -> None:
    waits = [
        after_failure(failures=n, now=T0, expires_at=None, policy=POLICY, rand=lambda: 0.999999).at
        - T0
        for n in range(1, 10)
    ]
    assert round(waits[0].total_seconds()) == 30
    assert round(waits[1].total_seconds()) == 60
    assert round(waits[2].total_seconds()) == 120
    assert round(waits[-1].total_seconds()) == 3600
    assert all(a <= b for a, b in itertools.pairwise(waits))


def test_retries_speed_up_as_the_held_staple_nears_expiry() -> None:
    d = after_failure(
        failures=10, now=T0, expires_at=T0 + 10 * 60 * S, policy=POLICY, rand=lambda: 0.5
    )
    assert (d.at, d.reason) == (T0 + 5 * 60 * S, "ExpiryBound")
