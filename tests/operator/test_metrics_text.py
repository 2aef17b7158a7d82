"""/metrics renders the per-Secret families itself: what it serves must be what the registry
holds, in a text Prometheus parses."""

from __future__ import annotations

import datetime

from prometheus_client.parser import text_string_to_metric_families

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.controller.metrics import Metrics

NOW = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)


def samples(families: object) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families  # type: ignore[attr-defined]
        for s in f.samples
        if s.name.startswith(("ocsp_stapler_certificate", "ocsp_stapler_staple"))
    }


def test_the_served_text_is_what_the_registry_holds() -> None:
    metrics = Metrics()
    hour = datetime.timedelta(hours=1)
    metrics.observe_secret(
        SecretRef("web", "shop"), status="good", expires_at=NOW + hour, refresh_at=NOW
    )
    metrics.observe_secret(
        SecretRef("web", 'odd"name\\'), status="revoked", expires_at=None, refresh_at=NOW
    )
    metrics.observe_secret(SecretRef("web", "new"), status=None, expires_at=None, refresh_at=NOW)
    metrics.observe_secret(SecretRef("web", "gone"), status="good", expires_at=NOW, refresh_at=NOW)
    metrics.forget_secret(SecretRef("web", "gone"))
    metrics.observe_secret(  # back to nothing known: no series left
        SecretRef("web", "idle"), status=None, expires_at=None, refresh_at=None
    )
    served = samples(text_string_to_metric_families(metrics.exposition().decode()))
    held = samples(metrics.registry.collect())
    assert served == held
    assert ("ocsp_stapler_certificate_status",
            (("namespace", "web"), ("secret", 'odd"name\\'), ("status", "revoked")), 1.0) in served  # fmt: skip
    assert len(served) == 6  # shop: 3; odd: status and refresh; new: refresh
    assert metrics.registry.get_sample_value("ocsp_stapler_managed_secrets") == 0
