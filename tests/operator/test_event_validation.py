"""Events the real API server's events.k8s.io/v1 validation accepts, whatever the object's
name and the message: a name of 253 characters with a dash or a dot where it is cut, and a
note of non-ASCII text longer than the 1024 bytes the server allows (cut, not refused)."""

from __future__ import annotations

import pytest

from ocsp_stapler.k8s.client import ApiClient, resource_path
from ocsp_stapler.k8s.events import MAX_MESSAGE, EventPoster
from support.clocks import utcnow


def _name(cut_at: str) -> str:
    """A valid 253-character DNS subdomain whose 200th character is ``cut_at``."""
    return ("a" * 199 + cut_at + "b" * 53)[:253]


@pytest.mark.parametrize("cut_at", ["-", ".", "a"])
async def test_every_event_is_accepted(api: ApiClient, namespace: str, cut_at: str) -> None:
    poster = EventPoster(api, clock=utcnow, reporting_controller="ocsp-stapler.dev/operator",
                         action="Staple")  # fmt: skip
    involved = {"apiVersion": "v1", "kind": "Secret", "name": _name(cut_at),
                "namespace": namespace, "uid": "0b5e1d6e-0000-4000-8000-000000000000"}  # fmt: skip
    message = "émetteur: CN=Zertifizierungsstelle Ü " * 60  # ~2,400 bytes of UTF-8
    await poster.post(involved, type="Warning", reason="ChainInvalid", message=message)
    listed = await api.get(
        resource_path(api_version="events.k8s.io/v1", plural="events", namespace=namespace)
    )
    (event,) = listed["items"]
    assert event["regarding"]["name"] == involved["name"]
    note = event["note"]
    assert len(note.encode()) <= MAX_MESSAGE
    assert message.startswith(note)
    assert len(note.encode()) > MAX_MESSAGE - 4  # cut at the limit, on a whole character
