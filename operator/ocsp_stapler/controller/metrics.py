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

``status`` is good, revoked, unknown, NoResponder or Error. Each operator instance has its
own registry (tests run several in one process).
"""

from __future__ import annotations

import contextlib
import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ocsp_stapler.controller.bodies import SecretRef


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.managed = Gauge(
            "ocsp_stapler_managed_secrets", "Secrets opted in to stapling.", registry=r
        )
        self.fetches = Counter(
            "ocsp_stapler_fetches", "OCSP fetches by result.", ["result"], registry=r
        )
        self.fetch_duration = Histogram(
            "ocsp_stapler_fetch_duration_seconds",
            "Time to fetch and verify one OCSP response.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.expiry = Gauge(
            "ocsp_stapler_staple_expiry_timestamp_seconds",
            "When the held staple expires (nextUpdate), Unix time.",
            ["namespace", "secret"],
            registry=r,
        )
        self.refresh = Gauge(
            "ocsp_stapler_staple_refresh_timestamp_seconds",
            "When the next refresh is due, Unix time.",
            ["namespace", "secret"],
            registry=r,
        )
        self.status = Gauge(
            "ocsp_stapler_certificate_status",
            "1 for the certificate's current status.",
            ["namespace", "secret", "status"],
            registry=r,
        )
        self._status_of: dict[SecretRef, str] = {}
        self.writes = Counter(
            "ocsp_stapler_secret_writes", "Writes to Secrets by action.", ["action"], registry=r
        )

    def observe_secret(
        self,
        ref: SecretRef,
        *,
        status: str | None,
        expires_at: datetime.datetime | None,
        refresh_at: datetime.datetime | None,
    ) -> None:
        labels = {"namespace": ref.namespace, "secret": ref.name}
        previous = self._status_of.get(ref)
        if previous != status:
            # One series per Secret, not one per possible status: 10,000 Secrets are scraped
            # as 10,000 lines, not 50,000.
            if previous is not None:
                self._remove(self.status, {**labels, "status": previous})
            if status is not None:
                self.status.labels(status=status, **labels).set(1)
                self._status_of[ref] = status
            else:
                self._status_of.pop(ref, None)
        if expires_at is not None:
            self.expiry.labels(**labels).set(expires_at.timestamp())
        else:
            self._remove(self.expiry, labels)
        if refresh_at is not None:
            self.refresh.labels(**labels).set(refresh_at.timestamp())
        else:
            self._remove(self.refresh, labels)

    def forget_secret(self, ref: SecretRef) -> None:
        labels = {"namespace": ref.namespace, "secret": ref.name}
        self._remove(self.expiry, labels)
        self._remove(self.refresh, labels)
        previous = self._status_of.pop(ref, None)
        if previous is not None:
            self._remove(self.status, {**labels, "status": previous})

    @staticmethod
    def _remove(gauge: Gauge, labels: dict[str, str]) -> None:
        with contextlib.suppress(KeyError):
            gauge.remove(*[labels[n] for n in gauge._labelnames])
