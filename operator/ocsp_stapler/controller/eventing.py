"""Kubernetes Events on the Secret: how people hear about staples in `kubectl describe`.

Posted through our API client (not kopf's poster) because refreshes run outside kopf's handler
context. A failed post is logged and dropped: Events are for people, never a reason to stop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.k8s.client import ApiClient, ApiError, resource_path
from ocsp_stapler.names import COMPONENT

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class EventRecorder:
    def __init__(self, api: ApiClient, clock: Callable[[], datetime]) -> None:
        self._api = api
        self._clock = clock
        self._instance = socket.gethostname()

    async def post(
        self,
        ref: SecretRef,
        *,
        uid: str,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        now = _timestamp(self._clock())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name[:200]}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Secret",
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": uid,
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": f"{COMPONENT}.dev/operator",
            "reportingInstance": self._instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._api.create(
                resource_path(api_version="v1", plural="events", namespace=ref.namespace), body
            )
        except (ApiError, OSError, TimeoutError) as exc:
            logger.warning("could not post event %s on %s: %s", reason, ref, exc)
