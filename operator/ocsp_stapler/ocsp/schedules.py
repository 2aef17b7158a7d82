"""When to ask the responder next: small pure policies with the clock and the dice passed in.

After a success, refresh at the midpoint of thisUpdate..nextUpdate (Caddy, Traefik; CAs must
publish a new response at least 8 h before nextUpdate once validity is 16 h or more, so the
midpoint always finds one), but no later than nextUpdate minus a safety margin, and spread
by jitter so that 10,000 Secrets issued together do not refresh together: later than a point
where a newer response is expected (the midpoint, the end of HTTP caching; earlier would
find the same response, then again closer each time: a CA that regenerates exactly at the
midpoint was asked 7 times a day for 1-day responses), earlier than a deadline (the margin,
the longest interval). nginx refreshes an hour ahead at most and HAProxy hourly; both hammer
responders whose answers last a week.

Responders are shared and CAs rate-limit clients that hammer them, so three more rules:

- the responder's HTTP caching (RFC 5019 §6: ``Cache-Control: max-age``, ``Expires``) is the
  earliest time a newer response can exist: no refresh before it (unless the margin before
  expiry or the longest interval says so), jitter included, since the CA's CDN would only
  hand back the same bytes;
- a response valid for long is still re-checked after ``max_interval``, cached or not (2 days
  by default: a revocation is seen within 2 days even when a CA signs responses for years,
  and a CA that regenerates 7-day responses every 3 days is asked about twice per
  regeneration; CAs purge their CDN when they revoke);
- a fetch that brings no newer response than the one held (a CA that pre-generates responses,
  a CDN still caching the old one) backs off, 10 min doubling to 6 h, never retries within
  seconds (it did every 30 s before).

After a failure (``unknown`` included), back off exponentially with jitter, 30 s doubling to
1 h but never under ``min_spacing`` (a minute), and keep retrying while the held response is
valid, so one responder blip never costs a staple. Near expiry the retries speed up (half the
time left) but never come closer than a minute to each other; the expiry itself wakes the
Secret for the removal (``controller.lifecycle``), not for a request.

Invariants, checked by property tests: a retry is never in the past, never sooner than
``min_spacing``, and before a held response's expiry whenever there is a minute left before
it.
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
    max_interval: datetime.timedelta = datetime.timedelta(days=2)
    """A verified response is re-checked at least this often (a revocation is seen then)."""
    same_base: datetime.timedelta = datetime.timedelta(minutes=10)
    """The first wait after a fetch that brought no newer response, doubling to ``same_cap``."""
    same_cap: datetime.timedelta = datetime.timedelta(hours=6)
    min_spacing: datetime.timedelta = datetime.timedelta(minutes=1)
    """Retries near expiry come no closer than this to each other."""


_NEWER_EXPECTED = frozenset({"Midpoint", "SameResponse", "Late", "HttpCache"})
"""Refresh points where a newer response is expected to exist from then on: jitter moves
them later (earlier would find the same response again, and again, closer each time)."""


@dataclass(frozen=True)
class Decision:
    at: datetime.datetime
    reason: str
    """Why that time, e.g. ``Midpoint``, ``Margin``, ``Backoff``, ``ExpiryBound``."""


def _before_expiry(
    at: datetime.datetime,
    now: datetime.datetime,
    expires_at: datetime.datetime | None,
    policy: RefreshPolicy,
) -> tuple[datetime.datetime, bool]:
    """Pull ``at`` before expires_at when a held response is still valid."""
    if expires_at is None or expires_at <= now or at < expires_at:
        return at, False
    # Half the time left, so retries come faster as expiry nears, but a minute apart at
    # least. When less than that is left, the expiry itself wakes the Secret for the removal
    # (``lifecycle.next_wake``), and the next attempt keeps its minute.
    return max(now + (expires_at - now) / 2, now + policy.min_spacing), True


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
    unchanged: int = 0,
    fresh_until: datetime.datetime | None = None,
) -> Decision:
    """When to refresh a response that was just verified.

    ``unchanged``: how many fetches in a row brought no newer response than this one (0 when
    it is new); ``fresh_until``: until when the responder's HTTP caching says it is current.
    """
    target, reason = refresh_target(this_update=this_update, expires_at=expires_at, policy=policy)
    latest = expires_at - min(policy.margin, (expires_at - this_update) / 2)
    if target <= now + policy.min_spacing:
        # Past its refresh point (or within a minute of it), and this is the newest response
        # the responder has (it handed back the same, or a new one already this old): back
        # off, first to the margin before expiry, past it by halves of the time left.
        exponent = min(max(unchanged - 1, 0), 30)
        backoff = now + min(policy.same_base * (2**exponent), policy.same_cap)
        if latest > now + policy.min_spacing:
            backoff = min(backoff, latest)
        target, reason = backoff, "SameResponse" if unchanged else "Late"
    if fresh_until is not None and fresh_until > target:
        # Caching only ever makes the wait longer, never shorter.
        target, reason = max(min(fresh_until, latest), target), "HttpCache"
    if now + policy.max_interval < target:
        # Even a cached answer: a CA purges its CDN when it revokes (Let's Encrypt does).
        target, reason = now + policy.max_interval, "MaxInterval"
    wait = max(target - now, policy.min_wait)
    spread = wait * policy.jitter * rand()
    if reason in _NEWER_EXPECTED:
        # Asked early, a responder hands back the same response: spread later, within the
        # margin before expiry and the longest interval.
        ceiling = min(max(latest, now + policy.min_wait), now + policy.max_interval)
        at = max(min(now + wait + spread, ceiling), now + wait)
    else:
        at = now + wait - spread  # a deadline (the margin, the longest interval): earlier
    if fresh_until is not None:
        # Never back into the time the responder said its answer stays current: there, a
        # CDN hands back the same bytes.
        at = max(at, min(fresh_until, latest, now + policy.max_interval))
    at, bounded = _before_expiry(at, now, expires_at, policy)
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
    # "Equal jitter": half fixed, half random, so a retry is never immediate; and never
    # sooner than a minute, whatever the base (no sub-minute retries of one certificate).
    wait = max(ceiling / 2 + (ceiling / 2) * rand(), policy.min_spacing)
    at, bounded = _before_expiry(now + wait, now, expires_at, policy)
    return Decision(at=at, reason="ExpiryBound" if bounded else "Backoff")
