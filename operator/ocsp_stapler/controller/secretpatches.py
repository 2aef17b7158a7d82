"""The only writes the operator makes to a Secret, as JSON patches built by pure functions.

Every write that adds or removes a staple first *tests* that ``tls.crt`` is still the one the
staple was judged against: when cert-manager rotates the certificate while a fetch is in
flight, the API server rejects the patch (422) and the stale staple is never written. Removals
also test the staple value, so only the staple that was judged is removed. Nothing else of the
Secret is touched: the staple key and ``ocsp-stapler.dev/*`` annotations only.
"""

from __future__ import annotations

from typing import Any

from ocsp_stapler.controller.bodies import SecretView, Traces
from ocsp_stapler.names import STAPLE_CERT_SHA256, STAPLE_ISSUER, TLS_CERT_KEY

Patch = list[dict[str, Any]]


def pointer(*parts: str) -> str:
    """RFC 6901: '/' and '~' in keys are escaped."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _guard_certificate(view: SecretView) -> Patch:
    return [{"op": "test", "path": pointer("data", TLS_CERT_KEY), "value": view.crt_b64}]


def write_staple(
    view: SecretView,
    *,
    staple_key: str,
    staple_b64: str,
    cert_sha256: str,
    issuer_b64: str | None = None,
) -> Patch:
    """Write the staple, the certificate it belongs to, and its issuer when the Secret does
    not hold it (``issuer_b64``; an issuer annotation no longer needed is removed)."""
    ops: Patch = [
        *_guard_certificate(view),
        {"op": "add", "path": pointer("data", staple_key), "value": staple_b64},
        {
            "op": "add",
            "path": pointer("metadata", "annotations", STAPLE_CERT_SHA256),
            "value": cert_sha256,
        },
    ]
    issuer_path = pointer("metadata", "annotations", STAPLE_ISSUER)
    if issuer_b64 is not None:
        ops.append({"op": "add", "path": issuer_path, "value": issuer_b64})
    elif view.staple_issuer_b64 is not None:
        ops.append({"op": "remove", "path": issuer_path})
    return ops


def remove_staple(view: SecretView, *, staple_key: str) -> Patch:
    """Remove exactly the staple in ``view`` (and its certificate annotation)."""
    ops: Patch = [*_guard_certificate(view)]
    if view.staple_b64 is not None:
        ops += [
            {"op": "test", "path": pointer("data", staple_key), "value": view.staple_b64},
            {"op": "remove", "path": pointer("data", staple_key)},
        ]
    if view.staple_cert_sha256 is not None:
        ops.append({"op": "remove", "path": pointer("metadata", "annotations", STAPLE_CERT_SHA256)})
    if view.staple_issuer_b64 is not None:
        ops.append({"op": "remove", "path": pointer("metadata", "annotations", STAPLE_ISSUER)})
    return ops


def cleanup(traces: Traces, *, resource_version: str | None = None) -> Patch:
    """After an opt-out or an uninstall: remove the staple and our annotations, whatever they
    hold; with ``resource_version``, only from that version of the Secret (422 otherwise)."""
    guard: Patch = []
    if resource_version is not None:
        guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}]
    return (
        guard
        + [{"op": "remove", "path": pointer("data", k)} for k in traces.data_keys]
        + [
            {"op": "remove", "path": pointer("metadata", "annotations", k)}
            for k in traces.annotation_keys
        ]
    )
