"""Prometheus metrics of the operator, all under ``ocsp_stapler_``.

| metric | type | labels |
|---|---|---|
| ocsp_stapler_managed_secrets | gauge | |
| ocsp_stapler_fetches_total | counter | result: good, revoked, unknown, or an error reason |
| ocsp_stapler_fetch_duration_seconds | histogram | |
| ocsp_stapler_staple_expiry_timestamp_seconds | gauge | namespace, secret |
| ocsp_stapler_staple_refresh_timestamp_seconds | gauge | namespace, secret |
| ocsp_stapler_certificate_status | gauge, 1 (one series per Secret) | namespace, secret, status |
| ocsp_stapler_secret_writes_total | counter | action: write, remove, cleanup |
| ocsp_stapler_leader | gauge | |

``ocsp_stapler_leader`` is 1 while this process works (it holds the Lease, or runs without
leader election) and 0 while it is a standby or stopping: every replica reports it, so
``sum`` is the number of leaders.

``status`` is good, revoked (final: stapled or removed), unknown, NoResponder, or Error
while the last attempt failed (a staple may still be held: its expiry says until when). The
refresh timestamp is exported only while a success scheduled it, never during failures, so
that an expiry alert cannot wait on a retry (``statuses.metric_status``; the chart's
PrometheusRule reads these). Each operator instance has its own registry (tests run several
in one process).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ocsp_stapler.controller.bodies import SecretRef

_STATUS = ("ocsp_stapler_certificate_status", "1 for the certificate's current status.")
_EXPIRY = (
    "ocsp_stapler_staple_expiry_timestamp_seconds",
    "When the held staple expires (nextUpdate), Unix time.",
)
_REFRESH = (
    "ocsp_stapler_staple_refresh_timestamp_seconds",
    "When the next refresh is due, Unix time.",
)


class SecretSeries(Collector):
    """The three per-Secret families, kept as one small tuple per Secret.

    Not prometheus_client label children: a child per Secret and family is a whole metric
    object, and rendering 30,000 of them through Sample objects was the operator's peak
    memory at 10,000 Secrets (memray: ~100 MB of its ~260 MB, during a scrape). ``text``
    writes the exposition lines directly; ``collect`` serves registry queries (tests).
    """

    def __init__(self) -> None:
        self.series: dict[SecretRef, tuple[str | None, float | None, float | None]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = GaugeMetricFamily(*_STATUS, labels=["namespace", "secret", "status"])
        expiry = GaugeMetricFamily(*_EXPIRY, labels=["namespace", "secret"])
        refresh = GaugeMetricFamily(*_REFRESH, labels=["namespace", "secret"])
        for ref, (state, expires, due) in self.series.items():
            names = [ref.namespace, ref.name]
            if state is not None:
                status.add_metric([*names, state], 1.0)
            if expires is not None:
                expiry.add_metric(names, expires)
            if due is not None:
                refresh.add_metric(names, due)
        yield from (status, expiry, refresh)

    def text(self) -> bytes:
        """The families in the Prometheus text format (0.0.4), as ``generate_latest`` would."""
        status, expiry, refresh = [_head(*_STATUS)], [_head(*_EXPIRY)], [_head(*_REFRESH)]
        for ref, (state, expires, due) in self.series.items():
            labels = f'namespace="{_escape(ref.namespace)}",secret="{_escape(ref.name)}"'
            if state is not None:
                status.append(f'{_STATUS[0]}{{{labels},status="{_escape(state)}"}} 1.0')
            if expires is not None:
                expiry.append(f"{_EXPIRY[0]}{{{labels}}} {expires!r}")
            if due is not None:
                refresh.append(f"{_REFRESH[0]}{{{labels}}} {due!r}")
        return ("\n".join([*status, *expiry, *refresh]) + "\n").encode()


def _head(name: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        """Every family (for queries); ``exposition`` renders the same, faster."""
        self._aggregates = CollectorRegistry()
        a = self._aggregates
        self.managed = Gauge(
            "ocsp_stapler_managed_secrets", "Secrets opted in to stapling.", registry=a
        )
        self.fetches = Counter(
            "ocsp_stapler_fetches", "OCSP fetches by result.", ["result"], registry=a
        )
        self.fetch_duration = Histogram(
            "ocsp_stapler_fetch_duration_seconds",
            "Time to fetch and verify one OCSP response.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=a,
        )
        self.writes = Counter(
            "ocsp_stapler_secret_writes", "Writes to Secrets by action.", ["action"], registry=a
        )
        self.leader = Gauge(
            "ocsp_stapler_leader", "1 while this process leads (works), 0 as a standby.",
            registry=a,
        )  # fmt: skip
        self.secrets = SecretSeries()
        for collector in (self.managed, self.fetches, self.fetch_duration, self.writes,
                          self.leader):  # fmt: skip
            self.registry.register(collector)
        self.registry.register(self.secrets)

    def exposition(self) -> bytes:
        """What /metrics serves."""
        return generate_latest(self._aggregates) + self.secrets.text()

    def observe_secret(
        self,
        ref: SecretRef,
        *,
        status: str | None,
        expires_at: datetime.datetime | None,
        refresh_at: datetime.datetime | None,
    ) -> None:
        """One series per Secret and family, the current status only (10,000 Secrets are
        scraped as 10,000 status lines, not 50,000)."""
        expires = expires_at.timestamp() if expires_at is not None else None
        due = refresh_at.timestamp() if refresh_at is not None else None
        if status is None and expires is None and due is None:
            self.secrets.series.pop(ref, None)
        else:
            self.secrets.series[ref] = (status, expires, due)

    def forget_secret(self, ref: SecretRef) -> None:
        self.secrets.series.pop(ref, None)
