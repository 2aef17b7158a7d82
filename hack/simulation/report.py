"""bench/simulation.md, and the promises a simulated month must keep.

The same checks run in ``make simulate`` (every scenario at full size) and in the test suite
(every scenario small, ``tests/operator/test_simulation.py``), so a change to the refresh
rules that breaks one fails the build.
"""

from __future__ import annotations

from collections.abc import Sequence

from simulation.measures import Outcome
from simulation.world import Scenario

MIN_REQUEST_SPACING = 60.0
"""Seconds: two requests about one certificate never come closer (no retry storms)."""
CDN_MAX_PER_PERIOD = 2
"""Requests per certificate per CA update period, at most, when a CDN caches responses."""
REVOCATION_BOUND = 2 * 86400.0
"""Seconds from a revocation at the CA to the revoked staple in every Secret holding the
certificate: the longest refresh interval (2 days)."""
FIRST_STAPLE_BOUND = 60.0
"""Seconds: a healthy tenant's first staple, however another tenant's responder behaves."""

Result = tuple[Scenario, Outcome]


def broken_promises(results: Sequence[Result]) -> list[str]:
    """What went wrong, one line each; empty when every promise held."""
    broken: list[str] = []
    for scenario, o in results:
        name = scenario.name
        if o.expired_staple_seconds > 0:
            broken.append(f"{name}: an expired staple stayed {o.expired_staple_seconds:.3f} s")
        if o.expired_writes:
            broken.append(f"{name}: {o.expired_writes} staples written already expired")
        if o.wrong_certificate_seconds > 0:
            broken.append(f"{name}: a staple of another certificate stayed "
                          f"{o.wrong_certificate_seconds:.3f} s")  # fmt: skip
        closest = o.closest_requests_seconds
        if closest is not None and closest < MIN_REQUEST_SPACING:
            broken.append(f"{name}: two requests about one certificate {closest:.3f} s apart")
        cdn = scenario.behaviour.cdn_max_age is not None and not scenario.behaviour.outages
        most = o.max_requests_per_update_period
        if cdn and most is not None and most > CDN_MAX_PER_PERIOD and scenario.revoke_fraction == 0:
            broken.append(f"{name}: {most} requests about one certificate in one CA period")
        if o.revocations_unseen:
            broken.append(f"{name}: {o.revocations_unseen} revocations never stapled")
        latency = o.revocation_latency_max
        if latency is not None and latency > REVOCATION_BOUND:
            broken.append(f"{name}: a revocation took {latency / 3600:.1f} h to be stapled")
        first = o.first_staple_delay_max
        if first is not None and first > FIRST_STAPLE_BOUND:
            broken.append(f"{name}: a healthy tenant waited {first:.1f} s for its first staple")
    return broken


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.1f} h"


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def markdown(results: Sequence[Result], *, measured: str) -> str:
    lines = [
        "# Simulated month",
        "",
        f"Measured {measured} by `make simulate`: the operator's real reconciler, lifecycle "
        "and scheduler against an in-memory API, simulated CAs (real keys, real signed "
        "responses, verified by the operator's own code) and a virtual clock. Histories are "
        "read from the API's watch and the responders' logs, not from the operator. Wall "
        "time is this machine's: compare ratios, not times.",
        "",
        "| scenario | Secrets x days | OCSP req/cert/day (mean / max) | most req/cert per CA "
        "period | closest two req | expired-staple s | wrong-cert s | revocation → staple "
        "(median / max) | writes/cert/day (mean / max) | healthy first staple (max) | "
        "unstapled at end | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, o in results:
        revocation = (
            "-"
            if not o.revocations
            else f"{_hours(o.revocation_latency_median)} / {_hours(o.revocation_latency_max)}"
            + (f" ({o.revocations_unseen} unseen)" if o.revocations_unseen else "")
        )
        period = (
            "-"
            if o.max_requests_per_update_period is None
            else str(o.max_requests_per_update_period)
        )
        lines.append(
            f"| **{scenario.name}**: {scenario.story} | {o.secrets:,} x {o.days:g} | "
            f"{o.requests_per_cert_day.mean:.2f} / {o.requests_per_cert_day.max:.2f} | "
            f"{period} | {_seconds(o.closest_requests_seconds)} | "
            f"{o.expired_staple_seconds:.0f} | {o.wrong_certificate_seconds:.0f} | "
            f"{revocation} | {o.writes_per_cert_day.mean:.2f} / {o.writes_per_cert_day.max:.2f} "
            f"| {_seconds(o.first_staple_delay_max)} | {o.unstapled_at_end:,} | "
            f"{o.wall_seconds:.0f} s |"
        )
    lines += [
        "",
        "Promises checked on every run (`make simulate` fails otherwise, and the test suite "
        "plays every scenario small): no expired staple and no staple of another certificate "
        "in any Secret for any time; no two requests about one certificate within "
        f"{MIN_REQUEST_SPACING:.0f} s; at most {CDN_MAX_PER_PERIOD} requests per certificate "
        "per CA update period behind a CDN (nginx asks once an hour per worker, HAProxy's "
        "ocsp-update every 5 min to 1 h); every revocation stapled within 2 days; a healthy "
        "tenant's first "
        f"staple within {FIRST_STAPLE_BOUND:.0f} s whatever another tenant's responder does.",
        "",
        "How to read the bad days: during an outage requests follow the failure backoff "
        "(1 min doubling to 1 h), so a down responder costs about 24 requests per "
        "certificate per day; when staples expire during it they are removed at their "
        "nextUpdate to the second and come back with the first answer after it. Unstapled "
        "Secrets at the end are the ones whose responder never answers (hanging-namespace).",
        "",
    ]
    return "\n".join(lines)
