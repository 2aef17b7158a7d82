"""Ingress metrics: counted in each worker, summed by the supervisor, served as Prometheus.

| metric | type | labels |
|---|---|---|
| ocsp_stapler_ingress_handshakes_total | counter | version, staple |
| ocsp_stapler_ingress_handshake_failures_total | counter | |
| ocsp_stapler_ingress_requests_total | counter | code |
| ocsp_stapler_ingress_upstream_latency_seconds | histogram | |
| ocsp_stapler_ingress_upgrades_total | counter | result |
| ocsp_stapler_ingress_connections | gauge | |
| ocsp_stapler_ingress_secret_problems | gauge | reason |
| ocsp_stapler_ingress_refused_hosts | gauge | reason |
| ocsp_stapler_ingress_publish_failures_total | counter | stage |

``version`` is TLSv1.2 or TLSv1.3; ``staple`` is served, not_served (asked, none valid),
not_requested (the client sent no status_request) or resumed (a resumed session: no
certificate is sent, so no staple is due). ``upgrades`` counts the requests that
asked to switch protocols (WebSocket...), by ``result``: switched (the backend answered 101,
the connection became a tunnel), declined (the backend answered anything else, relayed as
an ordinary response) or failed (no backend answer: the ingress answered an error itself).
``secret_problems`` counts the Secrets
our Ingresses name that are not (fully) served, by reason (``snapshots.REASONS``: e.g.
KeyMismatch, not served; StapleRejected, served without a staple); ``publish_failures``
counts configurations that could not be built or sent (``stage`` build or send), each of
which left the previous configuration in place. ``refused_hosts`` counts the (Ingress, host)
pairs left out (``claims.REASONS``: HostTaken, another namespace holds the name;
HostNotInCertificate, the tls entry's certificate does not cover it).

Workers are processes, so each keeps plain counters and sends a snapshot every second; the
supervisor keeps the latest snapshot per worker and adds them up at scrape time. The Secret
and publish metrics are the supervisor's own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

UPGRADE_RESULTS = ("switched", "declined", "failed")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    __slots__ = (
        "connections",
        "failures",
        "handshakes",
        "latency_buckets",
        "latency_count",
        "latency_sum",
        "requests",
        "upgrades",
    )

    def __init__(self) -> None:
        self.handshakes: Counter[str] = Counter()
        self.failures = 0
        self.requests: dict[int, int] = {}
        self.latency_buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.connections = 0
        self.upgrades: Counter[str] = Counter()

    def handshake(self, version: str, staple: str) -> None:
        self.handshakes[f"{version}|{staple}"] += 1

    def request(self, status: int) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1

    def upgrade(self, result: str) -> None:
        """One request that asked to switch protocols, by its result (UPGRADE_RESULTS)."""
        self.upgrades[result] += 1

    def upstream_latency(self, seconds: float) -> None:
        i = bisect_left(BUCKETS, seconds)  # the first bound >= seconds
        if i < len(BUCKETS):
            self.latency_buckets[i] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "handshakes": dict(self.handshakes),
            "failures": self.failures,
            "requests": {str(code): n for code, n in self.requests.items()},
            "latency_buckets": self.latency_buckets,
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "connections": self.connections,
            "upgrades": dict(self.upgrades),
        }


class IngressCollector(Collector):
    """Sums the latest snapshot of every worker (including workers that were restarted)."""

    def __init__(self, reasons: tuple[str, ...] = (), host_reasons: tuple[str, ...] = ()) -> None:
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.secret_problems: dict[str, int] = dict.fromkeys(reasons, 0)
        """Secrets with a problem, by reason, as of the last build (set by the supervisor)."""
        self.refused_hosts: dict[str, int] = dict.fromkeys(host_reasons, 0)
        """(Ingress, host) pairs left out, by reason, as of the last build."""
        self.publish_failures: Counter[str] = Counter()

    def collect(self) -> Iterator[Any]:
        handshakes: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        upgrades: Counter[str] = Counter()
        buckets = [0] * len(BUCKETS)
        failures = count = connections = 0
        total = 0.0
        for snap in self.snapshots.values():
            handshakes.update(snap.get("handshakes", {}))
            requests.update(snap.get("requests", {}))
            upgrades.update(snap.get("upgrades", {}))
            failures += snap.get("failures", 0)
            for i, n in enumerate(snap.get("latency_buckets", [])[: len(BUCKETS)]):
                buckets[i] += n
            total += snap.get("latency_sum", 0.0)
            count += snap.get("latency_count", 0)
            connections += snap.get("connections", 0)
        hs = CounterMetricFamily(
            "ocsp_stapler_ingress_handshakes",
            "TLS handshakes completed.",
            labels=["version", "staple"],
        )
        for key, n in sorted(handshakes.items()):
            version, staple = key.split("|", 1)
            hs.add_metric([version, staple], n)
        yield hs
        yield CounterMetricFamily(
            "ocsp_stapler_ingress_handshake_failures", "TLS handshakes that failed.", value=failures
        )
        rq = CounterMetricFamily(
            "ocsp_stapler_ingress_requests", "HTTP responses by status code.", labels=["code"]
        )
        for code, n in sorted(requests.items()):
            rq.add_metric([code], n)
        yield rq
        up = CounterMetricFamily(
            "ocsp_stapler_ingress_upgrades",
            "Requests that asked to switch protocols, by result.",
            labels=["result"],
        )
        for result in UPGRADE_RESULTS:
            up.add_metric([result], upgrades[result])
        yield up
        cumulative, acc = [], 0
        for bound, n in zip(BUCKETS, buckets, strict=True):
            acc += n
            cumulative.append((str(bound), acc))
        cumulative.append(("+Inf", count))
        yield HistogramMetricFamily(
            "ocsp_stapler_ingress_upstream_latency_seconds",
            "Time from sending a request upstream to its response head.",
            buckets=cumulative,
            sum_value=total,
        )
        yield GaugeMetricFamily(
            "ocsp_stapler_ingress_connections", "Open client connections.", value=connections
        )
        problems = GaugeMetricFamily(
            "ocsp_stapler_ingress_secret_problems",
            "TLS Secrets named by our Ingresses that are not served, or served without a staple.",
            labels=["reason"],
        )
        for reason, n in sorted(self.secret_problems.items()):
            problems.add_metric([reason], n)
        yield problems
        refused = GaugeMetricFamily(
            "ocsp_stapler_ingress_refused_hosts",
            "Hosts of our Ingresses left out: held by another namespace, or not covered by "
            "the certificate of their tls entry.",
            labels=["reason"],
        )
        for reason, n in sorted(self.refused_hosts.items()):
            refused.add_metric([reason], n)
        yield refused
        failures_family = CounterMetricFamily(
            "ocsp_stapler_ingress_publish_failures",
            "Configurations that could not be built or sent (the previous one stayed).",
            labels=["stage"],
        )
        for stage in ("build", "send"):
            failures_family.add_metric([stage], self.publish_failures[stage])
        yield failures_family
