"""Clocks for tests: the real one for live responders, a settable one for everything else."""

from __future__ import annotations

import datetime


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, delta: datetime.timedelta) -> None:
        self.now += delta
