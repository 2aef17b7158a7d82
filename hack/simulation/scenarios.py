"""The month's stories: how real CAs and responders behave, good days and bad.

Each scenario names what it stands for; the numbers are the ones real CAs publish or show:
Let's Encrypt signed 7-day responses regenerated about every 3 days behind a CDN (until it
ended OCSP in 2025), DigiCert and Sectigo sign for about a week, some private CAs for a day,
some appliances for years. Outages are what responder status pages record: hours to days.
"""

from __future__ import annotations

import datetime

from simulation.cas import DAY, HOUR, Behaviour
from simulation.world import Scenario


def _days(a: float, b: float) -> tuple[datetime.timedelta, datetime.timedelta]:
    return (a * DAY, b * DAY)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="cdn-weekly",
        story="7-day responses regenerated every 3 days, behind a CDN (max-age 12 h)",
        secrets=10_000,
    ),
    Scenario(
        name="daily",
        story="1-day responses regenerated every 12 h, no CDN",
        behaviour=Behaviour(validity=DAY, regenerate_every=12 * HOUR, cdn_max_age=None),
    ),
    Scenario(
        name="outage-1d",
        story="the responder is down for 1 day (days 10-11)",
        behaviour=Behaviour(outages=(_days(10, 11),)),
    ),
    Scenario(
        name="shared-outage",
        story="half the Secrets hold copies of others' certificates; the responder is down 3 h",
        behaviour=Behaviour(outages=((10 * DAY, 10 * DAY + 3 * HOUR),)),
        shared_fraction=0.5,
        revoke_fraction=0.05,
    ),
    Scenario(
        name="outage-8d",
        story="the responder is down for 8 days (days 10-18): staples expire",
        behaviour=Behaviour(outages=(_days(10, 18),)),
    ),
    Scenario(
        name="same-past-midpoint",
        story="7-day responses regenerated only every 6.5 days: the same one past its midpoint",
        behaviour=Behaviour(regenerate_every=6.5 * DAY, cdn_max_age=None),
    ),
    Scenario(
        name="ten-year",
        story="one response valid for 10 years; 5 % of certificates revoked mid-run",
        behaviour=Behaviour(validity=3650 * DAY, regenerate_every=None, cdn_max_age=None),
        revoke_fraction=0.05,
    ),
    Scenario(
        name="revocations",
        story="5 % of certificates revoked mid-period (the CA signs at once, purges its CDN)",
        revoke_fraction=0.05,
    ),
    Scenario(
        name="caissuers-outage",
        story="issuer from caIssuers, down for the first 2 days; staples from before a restart",
        behaviour=Behaviour(issuer_outages=(_days(0, 2),)),
        ca_issuers=True,
        staples_from_before=7 * DAY,
    ),
    Scenario(
        name="rotation",
        story="every certificate is renewed while its first fetch is in flight",
        behaviour=Behaviour(latency=0.5),
        rotate_during_first_fetch=True,
    ),
    Scenario(
        name="hanging-namespace",
        story="one namespace's responder never answers; the others answer in 50 ms",
        behaviour=Behaviour(latency=0.05),
        hanging_namespace=True,
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}
