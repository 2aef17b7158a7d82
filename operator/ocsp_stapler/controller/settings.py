"""Operator settings: every knob, its unit and default, read from ``OCSP_STAPLER_*``."""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Literal

from ocsp_stapler.config import ConfigError
from ocsp_stapler.k8s.leases import SAFETY
from ocsp_stapler.names import STAPLE_KEY
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings
from ocsp_stapler.ocsp.responses import VerifyPolicy
from ocsp_stapler.ocsp.schedules import RefreshPolicy
from ocsp_stapler.ocsp.stapling import ATTEMPT_TIMEOUT, Attempt, StaplingConfig


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (comma list in the environment); empty means all namespaces."""
    staple_key: str = STAPLE_KEY
    """Secret data key the DER staple is written to."""
    revoked_action: Literal["staple", "remove"] = "staple"
    """What to do with a revoked response: staple it (the truth), or remove the staple."""
    refresh_margin_seconds: float = 3600.0
    """A refresh is due no later than nextUpdate minus this (bounded by half the validity)."""
    max_refresh_interval_seconds: float = 172800.0
    """A verified response is re-checked at least this often, however long it is valid."""
    backoff_base_seconds: float = 30.0
    """First retry delay after a failure; doubles per failure."""
    backoff_cap_seconds: float = 3600.0
    """Longest retry delay."""
    require_next_update: bool = True
    """Reject responses without nextUpdate."""
    certid_hash: Literal["sha1", "sha256"] = "sha1"
    """CertID hash algorithm in requests."""
    responder_allow_cidrs: tuple[str, ...] = ()
    """If set, responders must resolve into these ranges (comma list); a range inside a
    default-denied one (e.g. 127.0.0.0/8) opens it, a broad one (0.0.0.0/0) does not."""
    responder_deny_cidrs: tuple[str, ...] = ()
    """Ranges refused in addition to the defaults (loopback, link-local, cloud metadata, this
    host, multicast), comma list; a deny range always wins over an allow range."""
    proxy: str | None = None
    """HTTP proxy for responders; HTTP_PROXY/HTTPS_PROXY/NO_PROXY apply when unset."""
    connect_timeout_seconds: float = 5.0
    fetch_timeout_seconds: float = 10.0
    """Whole-exchange limit per responder request, redirects included."""
    attempt_timeout_seconds: float = ATTEMPT_TIMEOUT
    """Limit for one Secret's attempt, all its requests together (caIssuers downloads and
    responders, GET and POST): 15 s. At least ``fetch_timeout_seconds``; it bounds how long a
    certificate with hanging URLs holds one of the ``concurrency`` workers."""
    max_response_bytes: int = 64 * 1024
    concurrency: int = 32
    """Secrets processed at once (fetch, verify, write)."""
    unreachable_after: int = 3
    """Consecutive failures before a ResponderUnreachable Warning Event."""
    metrics_port: int = 9090
    """Prometheus /metrics port; 0 disables."""
    health_port: int = 8080
    """kopf liveness endpoint (/healthz) port; 0 disables."""
    log_format: Literal["plain", "json"] = "plain"
    leader_election: bool = False
    """Run as one of several replicas: only the holder of a Lease works (``k8s.leases``)."""
    leader_election_namespace: str = ""
    """The Lease's namespace (the chart sets the pod's own); required with leader election."""
    leader_election_identity: str = ""
    """This replica's name in the Lease; default: the host name and the process id."""
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    """The leader stops writing this long after the start of its last successful renewal."""
    retry_period_seconds: float = 2.0

    def validate(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("OCSP_STAPLER_CONCURRENCY must be at least 1")
        if self.refresh_margin_seconds < 0 or self.backoff_base_seconds <= 0:
            raise ConfigError("refresh margin and backoff must be positive")
        if self.max_refresh_interval_seconds < 300:
            raise ConfigError("OCSP_STAPLER_MAX_REFRESH_INTERVAL_SECONDS must be at least 300")
        if self.fetch_timeout_seconds <= 0:
            raise ConfigError("OCSP_STAPLER_FETCH_TIMEOUT_SECONDS must be positive")
        if self.attempt_timeout_seconds < self.fetch_timeout_seconds:
            raise ConfigError(
                "OCSP_STAPLER_ATTEMPT_TIMEOUT_SECONDS is below OCSP_STAPLER_FETCH_TIMEOUT_SECONDS: "
                "one attempt must have room for at least one whole request"
            )
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ConfigError("OCSP_STAPLER_BACKOFF_CAP_SECONDS is below the backoff base")
        try:
            self.guard()
        except ValueError as exc:
            raise ConfigError(f"responder CIDR lists: {exc}") from None
        if self.leader_election and not self.leader_election_namespace:
            raise ConfigError("OCSP_STAPLER_LEADER_ELECTION_NAMESPACE is required with "
                              "OCSP_STAPLER_LEADER_ELECTION")  # fmt: skip
        if not (0 < self.retry_period_seconds < self.renew_deadline_seconds
                < self.lease_duration_seconds):  # fmt: skip
            raise ConfigError("leader election needs 0 < retry period < renew deadline < lease "
                              "duration")  # fmt: skip
        if self.renew_deadline_seconds <= self.retry_period_seconds + SAFETY:
            # Each write is cut off SAFETY before the deadline: below this a renewal never
            # leaves a window to write in before the next one is due.
            raise ConfigError(f"the renew deadline must exceed the retry period by more than "
                              f"{SAFETY:g} s (the write fence's safety margin)")  # fmt: skip

    def guard(self) -> DestinationGuard:
        return DestinationGuard.from_lists(
            allow=self.responder_allow_cidrs, deny=self.responder_deny_cidrs
        )

    def fetch_settings(self) -> FetchSettings:
        return FetchSettings(
            connect_timeout=self.connect_timeout_seconds,
            total_timeout=self.fetch_timeout_seconds,
            max_body=self.max_response_bytes,
            proxy=self.proxy,
            guard=self.guard(),
        )

    def attempt(self, clock: Callable[[], float] = time.monotonic) -> Attempt:
        """A fresh budget for one Secret's attempt (its deadline starts now, by ``clock``)."""
        return Attempt(timeout=self.attempt_timeout_seconds, clock=clock)

    def stapling(self) -> StaplingConfig:
        return StaplingConfig(
            hash_name=self.certid_hash,
            verify=VerifyPolicy(require_next_update=self.require_next_update),
        )

    def refresh_policy(self) -> RefreshPolicy:
        return RefreshPolicy(
            margin=datetime.timedelta(seconds=self.refresh_margin_seconds),
            max_interval=datetime.timedelta(seconds=self.max_refresh_interval_seconds),
            backoff_base=datetime.timedelta(seconds=self.backoff_base_seconds),
            backoff_cap=datetime.timedelta(seconds=self.backoff_cap_seconds),
        )
