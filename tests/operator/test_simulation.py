"""The simulated month, small: every scenario keeps the promises `make simulate` checks.

Each scenario runs the operator's real reconciler, lifecycle and scheduler on a virtual
clock against the in-memory API and simulated CAs (hack/simulation), with a few dozen
Secrets instead of thousands: the promises are per certificate, so a few dozen find a
broken rule as surely as 10,000 (the full sizes run in `make simulate`). The bugs of issue
#14 each have a scenario that failed before the fix, named in the tests below.
"""

from __future__ import annotations

import datetime
import itertools

import pytest
from simulation import vloop
from simulation.cas import DAY
from simulation.measures import Outcome, Staples
from simulation.report import broken_promises
from simulation.scenarios import BY_NAME, SCENARIOS
from simulation.world import Scenario, World, simulate

SMALL = 24


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_scenario_keeps_every_promise(scenario: Scenario) -> None:
    small = scenario.scaled(SMALL)
    outcome = simulate(small)
    assert broken_promises([(small, outcome)]) == []
    assert outcome.secrets == SMALL
    assert outcome.requests_per_cert_day.mean > 0  # the responder was asked at all
    if scenario.hanging_namespace:  # one namespace never stapled, every other one was
        assert 0 < outcome.unstapled_at_end < SMALL
        assert outcome.first_staple_delay_max is not None


def _played(name: str, secrets: int = SMALL) -> tuple[World, Outcome]:
    async def main() -> tuple[World, Outcome]:
        world = World(BY_NAME[name].scaled(secrets))
        return world, await world.run()

    return vloop.run(main())


def test_a_caissuers_outage_never_keeps_an_expired_staple() -> None:
    """Bug 1: the issuer comes from caIssuers, down for 2 days, and the Secrets hold staples
    from before a restart. They were kept up to a week past nextUpdate (a half-prepared
    Secret was never judged again); they go at the nextUpdate they claim."""
    world, outcome = _played("caissuers-outage")
    staples = Staples()
    outage_end = world.start + 2 * DAY
    removed_in_outage = 0
    for segments in world.history.segments.values():
        for before, after in itertools.pairwise(segments):
            if before.staple and after.staple is None and after.start < outage_end:
                assert after.start == staples(before.staple).next_update
                removed_in_outage += 1
    assert removed_in_outage > 0  # the scenario does put expiring staples in the outage
    assert outcome.expired_staple_seconds == 0
    assert outcome.unstapled_at_end == 0  # and every Secret is stapled again after it


def test_behind_a_cdn_a_certificate_costs_two_requests_per_ca_update_at_most() -> None:
    """Bug 3: jitter moved refreshes before the CDN's max-age ran out (3 in a period)."""
    _world, outcome = _played("cdn-weekly")
    assert outcome.max_requests_per_update_period == 2
    assert outcome.requests_per_cert_day.max < 0.75  # 3-day periods, 2 requests each


def test_a_ca_regenerating_at_the_midpoint_is_asked_about_twice_a_day() -> None:
    """1-day responses regenerated every 12 h were asked 7.5 times a day, some 27 s apart
    (jitter moved the midpoint earlier, and earlier found the same response each time)."""
    _world, outcome = _played("daily")
    assert outcome.requests_per_cert_day.max < 2.2
    assert (outcome.closest_requests_seconds or 0) >= 60


def test_an_eight_day_outage_removes_staples_at_expiry_and_restores_them() -> None:
    world, outcome = _played("outage-8d")
    assert outcome.expired_staple_seconds == 0
    down = [
        s for segs in world.history.segments.values() for s in segs
        if s.staple is None and world.start + 10 * DAY < s.start < world.start + 18 * DAY
    ]  # fmt: skip
    assert len(down) == SMALL  # every staple expired during the outage, and was removed
    assert outcome.unstapled_at_end == 0
    assert (outcome.closest_requests_seconds or 0) >= 60  # no storm before the expiry


def test_a_revocation_is_stapled_within_the_longest_refresh_interval() -> None:
    for name in ("ten-year", "revocations"):
        world, outcome = _played(name, secrets=80)
        assert outcome.revocations > 0
        assert outcome.revocations_unseen == 0
        assert outcome.revocation_latency_max is not None
        assert outcome.revocation_latency_max <= datetime.timedelta(days=2).total_seconds()
        assert world.ca.revoked
