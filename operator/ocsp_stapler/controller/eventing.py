"""Kubernetes Events on the Secret: how people hear about staples in `kubectl describe`.

Posted through our API client (not kopf's poster) because refreshes run outside kopf's handler
context; the posting itself is shared with the ingress (``k8s.events``). A failed post is
logged and dropped: Events are for people, never a reason to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.k8s.client import Api
from ocsp_stapler.k8s.events import EventPoster, EventType
from ocsp_stapler.names import OPERATOR_CONTROLLER

__all__ = ["EventRecorder", "EventType"]


class EventRecorder:
    def __init__(self, api: Api, clock: Callable[[], datetime]) -> None:
        self._poster = EventPoster(
            api, clock=clock, reporting_controller=OPERATOR_CONTROLLER, action="Staple"
        )

    async def post(
        self,
        ref: SecretRef,
        *,
        uid: str,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        involved = {
            "apiVersion": "v1",
            "kind": "Secret",
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": uid,
        }
        await self._poster.post(involved, type=type, reason=reason, message=message)
