"""Posting events.k8s.io/v1 Events: how people hear about a problem in `kubectl describe`.

The events.k8s.io API (not core/v1's) because it names the reporting controller and instance
and the action, as controllers are asked to since Kubernetes 1.19; `kubectl describe` and
`kubectl get events` show them as they show core Events (one storage).

Shared by the operator (Events on Secrets) and the ingress (Events on the Ingresses whose
Secret it cannot use), which must not import each other. Posted through our API client, and
a failed post is logged and dropped: Events are for people, never a reason to stop.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from ocsp_stapler.k8s.client import REQUEST_ERRORS, Api, resource_path

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]

MAX_MESSAGE = 1024
"""Bytes of an Event's note kept (events.k8s.io/v1 refuses a longer one, and the Event)."""


def micro_time(now: datetime) -> str:
    """A MicroTime as eventTime carries it: UTC, microseconds, ``Z``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_body(
    involved: Mapping[str, str],
    *,
    type: EventType,
    reason: str,
    message: str,
    action: str,
    now: datetime,
    reporting_controller: str,
    instance: str,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about ``involved`` (apiVersion, kind, name, namespace, uid)."""
    unique = secrets.token_hex(2)  # two posts in one nanosecond (a fake clock) stay apart
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            # As client-go names them (events.k8s.io refuses a generateName ending in "."):
            # the object's name (a DNS subdomain already), a dot, a unique hex suffix.
            "name": f"{involved['name'][:200].rstrip('-.')}.{int(now.timestamp() * 1e9):x}{unique}",
            "namespace": involved["namespace"],
        },
        "regarding": dict(involved),
        "type": type,
        "reason": reason,
        "action": action,
        "note": _cut(message, MAX_MESSAGE),
        "eventTime": micro_time(now),
        "reportingController": reporting_controller,
        "reportingInstance": instance[:128],
    }


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8 (the API server counts bytes), whole characters."""
    return text.encode()[:limit].decode(errors="ignore")


class EventPoster:
    """Posts Events as one reporting controller (``ocsp-stapler.dev/operator``,
    ``.../ingress``) doing one kind of ``action`` (``Staple``, ``Serve``)."""

    def __init__(
        self,
        api: Api,
        *,
        clock: Callable[[], datetime],
        reporting_controller: str,
        action: str,
    ) -> None:
        self._api = api
        self._clock = clock
        self._controller = reporting_controller
        self._action = action
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
            action=self._action,
            now=self._clock(),
            reporting_controller=self._controller,
            instance=self._instance,
        )
        namespace = involved["namespace"]
        try:
            await self._api.create(
                resource_path(api_version="events.k8s.io/v1", plural="events",
                              namespace=namespace),
                body,
            )  # fmt: skip
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
