"""The operator's leader-election timings, refused where they cannot work: the write fence
needs a window between renewals (the renew deadline above the retry period plus the fence's
1 s safety margin), and the standby's wait must outlast the old leader's deadline."""

from __future__ import annotations

import pytest

from ocsp_stapler.config import ConfigError
from ocsp_stapler.controller.settings import OperatorSettings


def _settings(lease: float, renew: float, retry: float) -> OperatorSettings:
    return OperatorSettings(leader_election=True, leader_election_namespace="ops",
                            lease_duration_seconds=lease, renew_deadline_seconds=renew,
                            retry_period_seconds=retry)  # fmt: skip


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "refused"),
    [
        (15, 10, 2, None),
        (3, 2, 0.5, None),
        (15, 3.01, 2, None),
        (15, 3, 2, "must exceed the retry period"),
        (15, 1, 0.1, "must exceed the retry period"),
        (15, 0.9, 0.1, "must exceed the retry period"),
        (10, 10, 2, "retry period < renew deadline < lease duration"),
        (15, 10, 10, "retry period < renew deadline < lease duration"),
        (15, 10, 0, "retry period < renew deadline < lease duration"),
    ],
)
def test_leader_election_timings(
    lease: float, renew: float, retry: float, refused: str | None
) -> None:
    settings = _settings(lease, renew, retry)
    if refused is None:
        settings.validate()
    else:
        with pytest.raises(ConfigError, match=refused):
            settings.validate()
