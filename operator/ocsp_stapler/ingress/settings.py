"""Ingress settings: every knob, its unit and default, read from ``OCSP_STAPLER_*``."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ocsp_stapler.config import ConfigError
from ocsp_stapler.ingress.cgroups import default_workers
from ocsp_stapler.ingress.proxying import ProxySettings
from ocsp_stapler.ingress.ticket_keys import MAX_TICKET_LIFETIME
from ocsp_stapler.ingress.worker import WorkerSettings
from ocsp_stapler.names import INGRESS_CLASS, INGRESS_CONTROLLER, STAPLE_KEY


@dataclasses.dataclass(frozen=True)
class IngressSettings:
    ingress_class: str = INGRESS_CLASS
    """IngressClass name served; the class must name controller ocsp-stapler.dev/ingress."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (comma list); empty means all."""
    bind_address: str = "0.0.0.0"  # noqa: S104 (an ingress listens on the pod network)
    https_port: int = 8443
    http_port: int = 8080
    """Plain HTTP port that redirects to https; 0 disables it."""
    advertised_https_port: int = 443
    """The https port clients use (in redirects), e.g. the Service's port."""
    health_port: int = 10254
    """/healthz, /readyz and /metrics; 0 disables."""
    workers: int = 0
    """Worker processes; 0 means one per CPU the pod may use (its cgroup CPU quota, its CPU
    affinity), not the node's core count."""
    must_staple_policy: Literal["lenient", "strict"] = "lenient"
    """For certificates with the TLS Feature must-staple: serve without a staple (lenient),
    or refuse handshakes while no valid staple is held (strict)."""
    staple_key: str = STAPLE_KEY
    require_next_update: bool = True
    """Serve only staples with nextUpdate (the operator's setting: the same chart value)."""
    default_certificate: str = ""
    """namespace/name of a TLS Secret for clients whose SNI matches nothing; else self-signed."""
    handshake_timeout_seconds: float = 10.0
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 60.0
    body_timeout_seconds: float = 60.0
    tunnel_idle_timeout_seconds: float = 3600.0
    """An upgraded connection (WebSocket) with no byte either way this long is closed."""
    connect_timeout_seconds: float = 5.0
    upstream_timeout_seconds: float = 60.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 10_000
    """Per worker; connections beyond it are closed at once."""
    drain_timeout_seconds: float = 20.0
    shutdown_delay_seconds: float = 0.0
    """After SIGTERM, seconds of serving on, not ready, before draining: new connections are
    still accepted while Kubernetes takes the pod out of its Service's endpoints (the kubelet
    sends SIGTERM and the endpoint removal at the same time; load balancers and kube-proxy
    catch up over a few seconds), and every response says ``Connection: close`` so
    keep-alive clients move on. The chart sets 5."""
    session_tickets: bool = True
    """TLS session resumption by tickets, with one key shared by all workers (``ticket_keys``)."""
    ticket_key_rotation_seconds: float = 3600.0
    """A new ticket key this often (tickets under the previous key no longer resume): what a
    leaked key can decrypt is at most this much of resumed sessions."""
    log_format: Literal["plain", "json"] = "plain"

    controller: str = INGRESS_CONTROLLER

    def validate(self) -> None:
        for name in ("https_port", "http_port", "health_port", "advertised_https_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"OCSP_STAPLER_{name.upper()}={port}: not a port")
        if not 1 <= self.ticket_key_rotation_seconds <= MAX_TICKET_LIFETIME:  # also NaN
            raise ConfigError(
                "OCSP_STAPLER_TICKET_KEY_ROTATION_SECONDS must be between 1 and 604800 (the "
                "rotation is the tickets' lifetime: RFC 8446 allows 7 days at most)"
            )
        if self.shutdown_delay_seconds < 0 or self.drain_timeout_seconds < 0:
            raise ConfigError("the shutdown delay and the drain timeout cannot be negative")
        if self.workers < 0 or self.max_connections < 1 or self.max_headers < 1:
            raise ConfigError("workers, max connections and max headers must be positive")
        if self.default_certificate and self.default_certificate.count("/") != 1:
            raise ConfigError("OCSP_STAPLER_DEFAULT_CERTIFICATE must be namespace/name")

    def worker_count(self) -> int:
        return self.workers or default_workers()

    def worker_settings(self) -> WorkerSettings:
        return WorkerSettings(
            handshake_timeout=self.handshake_timeout_seconds,
            max_connections=self.max_connections,
            drain_timeout=self.drain_timeout_seconds,
            must_staple_policy=self.must_staple_policy,
            https_port=self.advertised_https_port,
            proxy=ProxySettings(
                header_timeout=self.header_timeout_seconds,
                idle_timeout=self.idle_timeout_seconds,
                body_timeout=self.body_timeout_seconds,
                tunnel_idle_timeout=self.tunnel_idle_timeout_seconds,
                connect_timeout=self.connect_timeout_seconds,
                upstream_timeout=self.upstream_timeout_seconds,
                max_header_bytes=self.max_header_bytes,
                max_headers=self.max_headers,
            ),
        )
