"""When to ask the responder next: small pure policies with the clock and the dice passed in.

After a success, refresh at the midpoint of thisUpdate..nextUpdate (Caddy, Traefik; CAs must
publish a new response at least 8 h before nextUpdate once validity is 16 h or more, so the
midpoint always finds one), but no later than nextUpdate minus a safety margin, and spread
by jitter so that 10,000 Secrets issued together do not refresh together. nginx refreshes an
hour ahead at most and HAProxy hourly; both hammer responders whose answers last a week.

After a failure (``unknown`` included), back off exponentially with jitter, 30 s doubling to
1 h, and keep retrying while the held response is valid, always before it expires, so one
responder blip never costs a staple.

Invariants, checked by property tests: a refresh is never in the past, and while a held
response is valid the next attempt comes before it expires.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]
"""Returns a float in [0, 1): ``random.Random().random``, or a constant in tests."""


@dataclass(frozen=True)
class RefreshPolicy:
    margin: datetime.timedelta = datetime.timedelta(hours=1)
    """A refresh is due no later than nextUpdate minus this (bounded by half the validity)."""
    jitter: float = 0.1
    """Refreshes are moved earlier by up to this fraction of the wait."""
    min_wait: datetime.timedelta = datetime.timedelta(seconds=30)
    """Never ask again sooner than this after a success (short-lived responses excepted)."""
    backoff_base: datetime.timedelta = datetime.timedelta(seconds=30)
    backoff_cap: datetime.timedelta = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Decision:
    at: datetime.datetime
    reason: str
    """Why that time, e.g. ``Midpoint``, ``Margin``, ``Backoff``, ``ExpiryBound``."""


def _before_expiry(
    at: datetime.datetime, now: datetime.datetime, expires_at: datetime.datetime | None
) -> tuple[datetime.datetime, bool]:
    """Pull ``at`` inside (now, expires_at) when a held response is still valid."""
    if expires_at is None or expires_at <= now:
        return at, False
    if at < expires_at:
        return at, False
    # Halve the time left, so retries keep coming faster as expiry nears and never reach it.
    return now + (expires_at - now) / 2, True


def refresh_target(
    *, this_update: datetime.datetime, expires_at: datetime.datetime, policy: RefreshPolicy
) -> tuple[datetime.datetime, str]:
    """The ideal refresh time of a response, before jitter and minimum waits."""
    validity = expires_at - this_update
    midpoint = this_update + validity / 2
    latest = expires_at - min(policy.margin, validity / 2)
    return (midpoint, "Midpoint") if midpoint <= latest else (latest, "Margin")


def after_success(
    *,
    this_update: datetime.datetime,
    expires_at: datetime.datetime,
    now: datetime.datetime,
    policy: RefreshPolicy,
    rand: Random,
) -> Decision:
    """When to refresh a response that was just verified."""
    target, reason = refresh_target(this_update=this_update, expires_at=expires_at, policy=policy)
    wait = max(target - now, policy.min_wait)
    wait -= wait * policy.jitter * rand()
    at, bounded = _before_expiry(now + max(wait, datetime.timedelta(0)), now, expires_at)
    return Decision(at=at, reason="ExpiryBound" if bounded else reason)


def after_failure(
    *,
    failures: int,
    now: datetime.datetime,
    expires_at: datetime.datetime | None,
    policy: RefreshPolicy,
    rand: Random,
) -> Decision:
    """When to try again after ``failures`` consecutive failures (>= 1).

    ``expires_at`` is when the held response (if any) expires: retries come before then.
    """
    exponent = min(max(failures, 1) - 1, 30)
    ceiling = min(policy.backoff_base * (2**exponent), policy.backoff_cap)
    # "Equal jitter": half fixed, half random, so a retry is never immediate.
    wait = ceiling / 2 + (ceiling / 2) * rand()
    at, bounded = _before_expiry(now + wait, now, expires_at)
    return Decision(at=at, reason="ExpiryBound" if bounded else "Backoff")
