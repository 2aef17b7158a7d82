"""What a simulated month is judged by, read from what the API server and the CAs saw.

The operator's own bookkeeping is not trusted for any of it: every Secret's history is
recorded from the in-memory API's watch (each staple that was in it, from when to when), and
every request from the simulated responders' logs. Staples are parsed here with
cryptography, independently of the operator's verifier.
"""

from __future__ import annotations

import base64
import datetime
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import cast

from cryptography import x509
from cryptography.x509 import ocsp

from ocsp_stapler.names import STAPLE_KEY, TLS_CERT_KEY

Clock = datetime.datetime


@dataclass(frozen=True)
class Segment:
    start: datetime.datetime
    staple: str | None
    """The staple (base64) the Secret held from ``start`` to the next segment."""
    serial: int | None
    """The serial of the certificate in tls.crt then."""


@dataclass
class History:
    """Every state of every Secret, as a watch saw it."""

    segments: dict[str, list[Segment]] = field(default_factory=lambda: defaultdict(list))
    writes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Changes to the staple (written, replaced or removed) per Secret."""
    created: dict[str, datetime.datetime] = field(default_factory=dict)
    _serials: dict[str, int] = field(default_factory=dict)

    def record(self, key: str, event: str, obj: dict[str, object], now: datetime.datetime) -> None:
        data = cast(dict[str, str], obj.get("data") or {})
        staple = None if event == "DELETED" else data.get(STAPLE_KEY)
        crt = data.get(TLS_CERT_KEY)
        serial = self._serials.get(crt) if isinstance(crt, str) else None
        if serial is None and isinstance(crt, str):
            serial = x509.load_pem_x509_certificate(base64.b64decode(crt)).serial_number
            self._serials[crt] = serial
        if event == "ADDED":
            self.created.setdefault(key, now)
        segments = self.segments[key]
        if segments and segments[-1].staple != staple:
            self.writes[key] += 1
        if not segments or (segments[-1].staple, segments[-1].serial) != (staple, serial):
            segments.append(Segment(start=now, staple=staple, serial=serial))


@dataclass(frozen=True)
class Parsed:
    serial: int
    next_update: datetime.datetime
    revoked: bool


class Staples:
    """Staples parsed once each (thousands of Secrets hold the same few per certificate)."""

    def __init__(self) -> None:
        self._parsed: dict[str, Parsed] = {}

    def __call__(self, b64: str) -> Parsed:
        found = self._parsed.get(b64)
        if found is None:
            resp = ocsp.load_der_ocsp_response(base64.b64decode(b64))
            single = next(iter(resp.responses))
            found = Parsed(
                serial=single.serial_number,
                # The simulated CAs always set nextUpdate; none would mean "expired now".
                next_update=single.next_update_utc or single.this_update_utc,
                revoked=single.certificate_status is ocsp.OCSPCertStatus.REVOKED,
            )
            self._parsed[b64] = found
        return found


@dataclass(frozen=True)
class Spread:
    mean: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(mean=statistics.fmean(values), max=max(values)) if values else cls(0.0, 0.0)


@dataclass(frozen=True)
class Outcome:
    secrets: int
    days: float
    requests_per_cert_day: Spread
    max_requests_per_update_period: int | None
    closest_requests_seconds: float | None
    """The shortest time between two requests about one certificate."""
    expired_staple_seconds: float
    expired_writes: int
    """Staples written already expired (zero-length in time, still a broken promise)."""
    wrong_certificate_seconds: float
    revocations: int
    revocation_latency_median: float | None
    revocation_latency_max: float | None
    revocations_unseen: int
    writes_per_cert_day: Spread
    first_staple_delay_max: float | None
    """Seconds from a healthy Secret's creation to its first staple (the longest)."""
    unstapled_at_end: int
    wall_seconds: float = 0.0


def _each_segment(
    segments: list[Segment], end: datetime.datetime
) -> list[tuple[Segment, datetime.datetime]]:
    return [(s, segments[i + 1].start if i + 1 < len(segments) else end) for i, s in
            enumerate(segments)]  # fmt: skip


@dataclass
class _SecretTally:
    expired_writes: int = 0
    """Staples that were already expired when they were written (even if removed at once)."""
    expired: float = 0.0
    wrong: float = 0.0
    first: datetime.datetime | None = None
    revoked_seen: datetime.datetime | None = None


def _tally(segments: list[Segment], staples: Staples, end: datetime.datetime) -> _SecretTally:
    """One Secret's history: expired and wrong-certificate time, first and revoked staple."""
    tally = _SecretTally()
    for segment, until in _each_segment(segments, end):
        if segment.staple is None:
            continue
        parsed = staples(segment.staple)
        tally.first = tally.first or segment.start
        if segment.start >= parsed.next_update:
            tally.expired_writes += 1
        tally.expired += max(0.0, (until - max(segment.start, parsed.next_update)).total_seconds())
        if parsed.serial != segment.serial:
            tally.wrong += (until - segment.start).total_seconds()
        if parsed.revoked and tally.revoked_seen is None:
            tally.revoked_seen = segment.start
    return tally


def _request_spacing(
    requests: dict[int, list[datetime.datetime]],
    period_of: dict[int, tuple[datetime.datetime, datetime.timedelta]] | None,
) -> tuple[float | None, int | None]:
    """The shortest gap between two requests about one certificate, and the most requests
    about one certificate within one of its CA's update periods."""
    closest: float | None = None
    most_in_period: int | None = None
    for serial, times in requests.items():
        ordered = sorted(times)
        for a, b in pairwise(ordered):
            gap = (b - a).total_seconds()
            closest = gap if closest is None else min(closest, gap)
        if period_of is not None and serial in period_of:
            first_generation, period = period_of[serial]
            counts: dict[int, int] = defaultdict(int)
            for t in ordered:
                counts[(t - first_generation) // period] += 1
            worst = max(counts.values(), default=0)
            most_in_period = worst if most_in_period is None else max(most_in_period, worst)
    return closest, most_in_period


def judge(
    history: History,
    *,
    requests: dict[int, list[datetime.datetime]],
    serials_of: dict[str, list[int]],
    revoked: dict[int, datetime.datetime],
    period_of: dict[int, tuple[datetime.datetime, datetime.timedelta]] | None,
    healthy: set[str],
    start: datetime.datetime,
    end: datetime.datetime,
) -> Outcome:
    """Everything ``Outcome`` holds, from the histories and the responders' logs."""
    staples = Staples()
    days = (end - start).total_seconds() / 86400
    expired = wrong = 0.0
    expired_writes = 0
    latencies: list[float] = []
    unseen = unstapled = 0
    first_delays: list[float] = []
    for key, segments in history.segments.items():
        tally = _tally(segments, staples, end)
        expired += tally.expired
        expired_writes += tally.expired_writes
        wrong += tally.wrong
        unstapled += segments[-1].staple is None
        if key in healthy:  # never stapled counts as the whole run
            first = tally.first or end
            first_delays.append((first - history.created.get(key, start)).total_seconds())
        for serial in serials_of.get(key, []):
            at = revoked.get(serial)
            if at is None or at >= end:
                continue
            if tally.revoked_seen is None:
                unseen += 1
            else:
                latencies.append((tally.revoked_seen - at).total_seconds())
    serials = {s for held in serials_of.values() for s in held}
    per_cert = [len(requests.get(s, [])) / days for s in serials]
    closest, most_in_period = _request_spacing(requests, period_of)
    writes = [history.writes.get(key, 0) / days for key in history.segments]
    return Outcome(
        secrets=len(history.segments),
        days=days,
        requests_per_cert_day=Spread.of(per_cert),
        max_requests_per_update_period=most_in_period,
        closest_requests_seconds=closest,
        expired_staple_seconds=expired,
        expired_writes=expired_writes,
        wrong_certificate_seconds=wrong,
        revocations=len(latencies) + unseen,
        revocation_latency_median=statistics.median(latencies) if latencies else None,
        revocation_latency_max=max(latencies) if latencies else None,
        revocations_unseen=unseen,
        writes_per_cert_day=Spread.of(writes),
        first_staple_delay_max=max(first_delays) if first_delays else None,
        unstapled_at_end=unstapled,
    )
