"""Posting core/v1 Events: how people hear about a problem in `kubectl describe`.

Shared by the operator (Events on Secrets) and the ingress (Events on the Ingresses whose
Secret it cannot use), which must not import each other. Posted through our API client, and
a failed post is logged and dropped: Events are for people, never a reason to stop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from ocsp_stapler.k8s.client import REQUEST_ERRORS, Api, resource_path
from ocsp_stapler.names import COMPONENT

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

MAX_MESSAGE = 1024
"""Characters of an Event message kept (the API server refuses much longer ones)."""


def timestamp(now: datetime) -> str:
    """An RFC 3339 time as Events carry it: UTC, whole seconds, ``Z``."""
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def event_body(
    involved: Mapping[str, str],
    *,
    type: EventType,
    reason: str,
    message: str,
    now: datetime,
    reporting_component: str,
    instance: str,
) -> dict[str, Any]:
    """A core/v1 Event about ``involved`` (apiVersion, kind, name, namespace, uid)."""
    stamp = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{involved['name'][:200]}.",
            "namespace": involved["namespace"],
        },
        "involvedObject": dict(involved),
        "type": type,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": reporting_component,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventPoster:
    """Posts Events as one reporting component (``ocsp-stapler.dev/operator``, ``.../ingress``)."""

    def __init__(
        self, api: Api, *, clock: Callable[[], datetime], reporting_component: str
    ) -> None:
        self._api = api
        self._clock = clock
        self._component = reporting_component
        self._instance = socket.gethostname()

    async def post(
        self, involved: Mapping[str, str], *, type: EventType, reason: str, message: str
    ) -> bool:
        """Post one Event; False (and a log line) when the API server did not take it."""
        body = event_body(
            involved,
            type=type,
            reason=reason,
            message=message,
            now=self._clock(),
            reporting_component=self._component,
            instance=self._instance,
        )
        namespace = involved["namespace"]
        try:
            await self._api.create(
                resource_path(api_version="v1", plural="events", namespace=namespace), body
            )
        except REQUEST_ERRORS as exc:
            logger.warning(
                "could not post event %s on %s %s/%s: %s",
                reason,
                involved.get("kind", "object"),
                namespace,
                involved["name"],
                exc,
            )
            return False
        return True
