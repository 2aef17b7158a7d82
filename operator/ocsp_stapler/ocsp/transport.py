"""The port through which the OCSP domain reaches the network: one async ``Fetch`` call.

The domain decides *what* to send (GET or POST, which URL, which body) and judges what comes
back; an adapter (``ocsp_stapler.net.fetching``) decides *how*: sockets, proxies, timeouts,
size caps and the destination guard. Tests pass a fetch of their own or the real adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"


@dataclass(frozen=True)
class HttpRequest:
    method: Literal["GET", "POST"]
    url: str
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    accept: str = OCSP_RESPONSE_TYPE
    """The content type a 200 answer must carry; anything else is refused by the fetcher."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    content_type: str
    body: bytes
    url: str
    """The URL that answered, after redirects."""
    fresh_for: float | None = None
    """Seconds the answer stays current by its HTTP caching (RFC 5019 §6: ``max-age`` less
    ``Age``, else ``Expires`` less ``Date``); None when the responder says nothing usable."""


class Fetch(Protocol):
    """Send one request; raise ``FetchFailed`` (or ``DestinationRefused``) when it cannot.

    The adapter bounds one request (its own timeout); the domain bounds a whole attempt by
    cancelling a request still running at the attempt's deadline (``stapling.Attempt``), so
    an adapter must give back what it holds when cancelled (``async with``, not callbacks).
    """

    async def __call__(self, request: HttpRequest) -> HttpResponse: ...
