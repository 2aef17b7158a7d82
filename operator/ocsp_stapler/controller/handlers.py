"""The kopf handlers: decorators and one-line calls, nothing else.

Only raw event handlers (``on.event``) are used on Secrets: they never add finalizers and never
write kopf's bookkeeping annotations, so the operator leaves no trace on Secrets it does not
staple and nothing that outlives it. The server-side field selector ``type=kubernetes.io/tls``
(set in ``running``) keeps every other Secret out of the watch stream entirely.
"""

from __future__ import annotations

from typing import Any

import kopf

from ocsp_stapler.controller.instance import OperatorInstance


def build_registry() -> kopf.OperatorRegistry:
    """A fresh registry per operator instance (tests run several in one process)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        return OperatorInstance.of(memo).connection_info()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        await OperatorInstance.of(memo).stop()

    @kopf.on.event("v1", "secrets", registry=registry)
    async def secret_event(
        event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        await OperatorInstance.of(memo).reconciler.observe(event.get("type"), body)

    return registry
