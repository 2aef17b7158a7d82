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


@given(
    validity=st.integers(min_value=1, max_value=20 * 365 * 24 * 3600),
    elapsed_fraction=st.floats(0.0, 0.999),
    rand=dice,
    unchanged=st.integers(0, 100),
    fresh=st.one_of(st.none(), st.integers(-3600, 400 * 24 * 3600)),
)
def test_success_refresh_is_never_past_nor_after_expiry_nor_later_than_the_bounds(
    validity: int, elapsed_fraction: float, rand: float, unchanged: int, fresh: int | None
) -> None:
    this_update = T0
    expires_at = T0 + validity * S
    now = this_update + (expires_at - this_update) * elapsed_fraction
    d = after_success(
        this_update=this_update,
        expires_at=expires_at,
        now=now,
        policy=POLICY,
        rand=lambda: rand,
        unchanged=unchanged,
        fresh_until=None if fresh is None else now + fresh * S,
    )
    assert d.at - now >= POLICY.min_spacing  # never two requests within a minute
    if expires_at - now > POLICY.min_spacing:
        assert d.at < expires_at  # a refresh before expiry while there is room for one
    else:  # the expiry wakes the Secret for the removal; the request keeps its minute
        assert d.at <= max(expires_at, now + POLICY.min_spacing)
    if fresh is None or fresh <= 0:
        assert d.at - now <= max(POLICY.max_interval, POLICY.same_cap)


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
    assert d.at - T0 >= POLICY.min_spacing  # no sub-minute retries, ever
    if expires_at is not None and expires_at - T0 > POLICY.min_spacing:
        assert d.at < expires_at  # a retry before expiry while there is a minute left
    assert d.at - T0 <= POLICY.backoff_cap


def test_a_response_refreshes_at_its_midpoint_within_the_longest_interval() -> None:
    d = after_success(
        this_update=T0, expires_at=T0 + 3 * D, now=T0 + 10 * S, policy=POLICY, rand=lambda: 0.0
    )
    assert (d.at, d.reason) == (T0 + 1.5 * D, "Midpoint")
    week = after_success(
        this_update=T0, expires_at=T0 + 7 * D, now=T0 + 10 * S, policy=POLICY, rand=lambda: 0.0
    )
    assert (week.at, week.reason) == (T0 + 10 * S + POLICY.max_interval, "MaxInterval")


def test_jitter_moves_a_midpoint_later_and_a_deadline_earlier_by_at_most_ten_percent() -> None:
    """Early at a midpoint finds the same response (again and again, closer each time)."""
    late = after_success(
        this_update=T0, expires_at=T0 + 3 * D, now=T0, policy=POLICY, rand=lambda: 0.999999
    )
    assert (late.reason, T0 + 1.5 * D < late.at <= T0 + 1.65 * D) == ("Midpoint", True)
    early = after_success(
        this_update=T0, expires_at=T0 + 7 * D, now=T0, policy=POLICY, rand=lambda: 0.999999
    )
    deadline = T0 + POLICY.max_interval
    assert (early.reason, deadline - 0.2 * D <= early.at < deadline) == ("MaxInterval", True)


def test_a_ca_that_regenerates_exactly_at_the_midpoint_is_asked_once_per_response() -> None:
    """1-day responses regenerated every 12 h: every refresh lands at or after the midpoint
    (it was 7 requests a day when jitter moved midpoints earlier)."""
    for rand in (0.0, 0.3, 0.999999):
        d = after_success(
            this_update=T0, expires_at=T0 + D, now=T0 + 60 * S, policy=POLICY, rand=lambda r=rand: r
        )
        assert T0 + 12 * H <= d.at <= T0 + D - POLICY.margin


def test_short_lived_response_obeys_the_margin_but_not_past_half() -> None:
    """90 minutes of validity with a 1 h margin: refresh at 45 min (half), never at once."""
    d = after_success(
        this_update=T0, expires_at=T0 + 90 * 60 * S, now=T0, policy=POLICY, rand=lambda: 0.0
    )
    assert d.at == T0 + 45 * 60 * S


def test_a_response_already_past_its_refresh_point_backs_off_like_the_same_one() -> None:
    """Fetched past its midpoint, it is the newest the responder has: no re-ask in 30 s."""
    now = T0 + D + S
    d = after_success(
        this_update=T0, expires_at=T0 + 2 * D, now=now, policy=POLICY, rand=lambda: 0.0
    )
    assert (d.at, d.reason) == (now + POLICY.same_base, "Late")
    near = after_success(
        this_update=T0, expires_at=T0 + 2 * D, now=T0 + 2 * D - 30 * 60 * S, policy=POLICY,
        rand=lambda: 0.0,
    )  # fmt: skip
    assert near.at == T0 + 2 * D - 20 * 60 * S  # past the margin: 10 min, before expiry


def test_backoff_doubles_to_an_hour_and_never_retries_within_a_minute() -> None:
    waits = [
        after_failure(failures=n, now=T0, expires_at=None, policy=POLICY, rand=lambda: 0.999999).at
        - T0
        for n in range(1, 10)
    ]
    assert round(waits[0].total_seconds()) == 60  # 30 s, raised to the minute between retries
    assert round(waits[1].total_seconds()) == 60
    assert round(waits[2].total_seconds()) == 120
    assert round(waits[-1].total_seconds()) == 3600
    assert all(a <= b for a, b in itertools.pairwise(waits))


def test_retries_speed_up_as_the_held_staple_nears_expiry() -> None:
    d = after_failure(
        failures=10, now=T0, expires_at=T0 + 10 * 60 * S, policy=POLICY, rand=lambda: 0.5
    )
    assert (d.at, d.reason) == (T0 + 5 * 60 * S, "ExpiryBound")


def test_retries_near_expiry_keep_a_minute_apart() -> None:
    """A failing responder, 10 minutes before the held staple expires (it was 32 attempts,
    most in the final second). The expiry itself is the removal's wake-up, not a request."""
    expires_at, now, attempts = T0 + 10 * 60 * S, T0, []
    for failures in itertools.count(1):
        now = after_failure(
            failures=failures, now=now, expires_at=expires_at, policy=POLICY, rand=lambda: 0.5
        ).at
        attempts.append(now)
        if now >= expires_at or failures > 100:
            break
    gaps = [b - a for a, b in itertools.pairwise([T0, *attempts])]
    assert min(gaps) >= POLICY.min_spacing
    assert attempts[-2] < expires_at <= attempts[-1]
    assert len(attempts) <= 12


def test_the_same_response_backs_off_from_ten_minutes_to_six_hours() -> None:
    """Past the midpoint of a 7-day response the responder keeps handing back the same one."""
    now = T0 + 4 * D
    waits = [
        after_success(
            this_update=T0, expires_at=T0 + 7 * D, now=now, policy=POLICY, rand=lambda: 0.0,
            unchanged=n,
        )
        for n in range(1, 10)
    ]  # fmt: skip
    assert {w.reason for w in waits} == {"SameResponse"}
    assert [round((w.at - now) / S) for w in waits[:3]] == [600, 1200, 2400]
    assert waits[-1].at - now == POLICY.same_cap


def test_a_ten_year_response_is_rechecked_within_the_longest_interval() -> None:
    d = after_success(
        this_update=T0, expires_at=T0 + 3650 * D, now=T0, policy=POLICY, rand=lambda: 0.0
    )
    assert (d.at, d.reason) == (T0 + POLICY.max_interval, "MaxInterval")


def test_http_caching_is_the_earliest_refresh_but_never_past_the_margin() -> None:
    later = after_success(
        this_update=T0, expires_at=T0 + 3 * D, now=T0, policy=POLICY, rand=lambda: 0.0,
        fresh_until=T0 + 1.8 * D,
    )  # fmt: skip
    assert (later.at, later.reason) == (T0 + 1.8 * D, "HttpCache")
    margin = after_success(
        this_update=T0, expires_at=T0 + 40 * H, now=T0, policy=POLICY, rand=lambda: 0.0,
        fresh_until=T0 + 30 * D,
    )  # fmt: skip
    assert margin.at == T0 + 40 * H - POLICY.margin
    longest = after_success(
        this_update=T0, expires_at=T0 + 7 * D, now=T0, policy=POLICY, rand=lambda: 0.0,
        fresh_until=T0 + 6 * D,
    )  # fmt: skip
    assert (longest.at, longest.reason) == (T0 + POLICY.max_interval, "MaxInterval")
    earlier = after_success(
        this_update=T0, expires_at=T0 + 3 * D, now=T0, policy=POLICY, rand=lambda: 0.0,
        fresh_until=T0 + 1 * H,
    )  # fmt: skip
    assert earlier.at == T0 + 1.5 * D  # a short cache lifetime does not bring a refresh forward


def test_a_short_cache_lifetime_does_not_cut_the_same_response_backoff() -> None:
    now = T0 + 4 * D
    d = after_success(
        this_update=T0, expires_at=T0 + 7 * D, now=now, policy=POLICY, rand=lambda: 0.0,
        unchanged=3, fresh_until=now + 35 * S,
    )  # fmt: skip
    assert (d.at - now, d.reason) == (40 * 60 * S, "SameResponse")


def test_the_same_response_backoff_keeps_to_the_margin_and_the_longest_interval() -> None:
    expires_at = T0 + 7 * D
    now = expires_at - 6 * H - 2 * 60 * S
    d = after_success(
        this_update=T0, expires_at=expires_at, now=now, policy=POLICY, rand=lambda: 0.0,
        unchanged=9,
    )  # fmt: skip
    assert d.at == expires_at - POLICY.margin  # not 6 h later, 2 minutes before expiry
    short = RefreshPolicy(max_interval=300 * S)
    d = after_success(
        this_update=T0, expires_at=expires_at, now=T0 + 4 * D, policy=short, rand=lambda: 0.0,
        unchanged=6,
    )  # fmt: skip
    assert d.at - (T0 + 4 * D) == 300 * S
