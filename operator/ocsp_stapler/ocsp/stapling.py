"""From a certificate chain to a verified staple: the one straight walk every caller takes.

chain → issuer (from the bundle, else downloaded from AIA caIssuers and checked) → responder
URLs (an explicit override wins, else every AIA OCSP URL in order) → request → fetch (GET,
then POST when the GET is refused) → verify → Staple. Each responder URL is tried in turn
until one gives a response that verifies; the error kept is the first URL's, named with all.

One attempt has one budget (``Attempt``), whatever the certificate asks for: a deadline for
all its requests together, and a number of URLs. The fetcher's own timeout bounds one request;
a certificate with several hanging caIssuers and OCSP URLs would otherwise hold a worker for
the sum of them (over a minute), and a few such Secrets in one namespace would delay every other
namespace's first staple. A request still running when the deadline passes is cancelled.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509

from ocsp_stapler.ocsp.chains import Chain, ca_issuer_urls, load_certificates, ocsp_urls, signed_by
from ocsp_stapler.ocsp.errors import (
    ChainInvalid,
    FetchFailed,
    IssuerNotFound,
    NonceMismatch,
    NoResponder,
    OCSPError,
    ResponseMalformed,
)
from ocsp_stapler.ocsp.queries import HashName, Query, build_query, http_requests
from ocsp_stapler.ocsp.responses import Staple, VerifyPolicy, parse_response, verify_response
from ocsp_stapler.ocsp.transport import Fetch, HttpRequest, HttpResponse

Clock = Callable[[], datetime.datetime]

ATTEMPT_TIMEOUT = 15.0
"""Seconds one attempt may take, all its requests together (issuer downloads and responders).

A healthy responder answers in milliseconds; 15 s still gives one slow request the fetcher's
whole 10 s and the next URL the rest, and bounds how long one certificate holds a worker."""

MAX_ATTEMPT_URLS = 4
"""URLs tried in one attempt, caIssuers and OCSP together (the first ones, in order).

caIssuers downloads take at most all but one, so a responder is always asked; responders get
what is left. Real certificates carry one of each, rarely two; more is noise or hostility."""


class Attempt:
    """The budget of one attempt for one certificate: a deadline and a number of URLs.

    ``clock`` is monotonic seconds (injectable). The deadline starts when the attempt is made.
    """

    def __init__(
        self,
        *,
        timeout: float = ATTEMPT_TIMEOUT,
        max_urls: int = MAX_ATTEMPT_URLS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("an attempt needs a positive timeout")
        if max_urls < 2:
            raise ValueError("an attempt needs room for one caIssuers URL and one responder")
        self.timeout = timeout
        self.max_urls = max_urls
        self._clock = clock
        self._deadline = clock() + timeout
        self.tried: list[str] = []
        """Every URL asked so far, in order (a URL asked with GET and POST counts once)."""

    def left(self) -> float:
        """Seconds until the deadline (zero or less: it has passed)."""
        return self._deadline - self._clock()

    def room(self, *, keep: int = 0) -> int:
        """How many more URLs may be tried, keeping ``keep`` for what comes after."""
        return max(0, self.max_urls - len(self.tried) - keep)

    def expired(self, what: str) -> FetchFailed:
        tried = ", ".join(self.tried) or "nothing"
        return FetchFailed(f"{what} within the attempt's {self.timeout:g} s limit (tried: {tried})")

    async def send(self, fetch: Fetch, request: HttpRequest, *, url: str) -> HttpResponse:
        """``fetch(request)`` for the URL ``url`` (a GET carries more in its path), cut short
        at the deadline: then ``DeadlinePassed``, and no further URL is asked."""
        left = self.left()
        if left <= 0:
            raise DeadlinePassed(url)
        if url not in self.tried:
            self.tried.append(url)
        limit = asyncio.timeout(left)
        try:
            async with limit:
                return await fetch(request)
        except TimeoutError:
            if limit.expired():
                raise DeadlinePassed(url) from None
            raise


class DeadlinePassed(FetchFailed):
    """The attempt's deadline passed during (or before) a request: try no further URL."""


def _skipped(urls: list[str], room: int, what: str, max_urls: int) -> str:
    if len(urls) <= room:
        return ""
    return f" ({len(urls) - room} more {what} not tried: at most {max_urls} URLs per attempt)"


@dataclass(frozen=True)
class StaplingConfig:
    hash_name: HashName = "sha1"
    """CertID hash: SHA-1 is what every responder answers; SHA-256 where the CA supports it."""
    nonce: bool = False
    """Send a nonce (RFC 8954). Off by default: pre-signing responders ignore it."""
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)


@dataclass(frozen=True)
class Fetched:
    """A verified staple and where it came from."""

    staple: Staple
    responder_url: str
    issuer: x509.Certificate
    fresh_until: datetime.datetime | None = None
    """Until when the responder's HTTP caching says no newer response is to be had."""


async def resolve_issuer(
    chain: Chain, *, fetch: Fetch, attempt: Attempt | None = None
) -> x509.Certificate:
    """The leaf's issuer: from the bundle, else from AIA caIssuers (and it must have signed).

    At most all but one of the attempt's URLs are downloaded (a responder is still to be
    asked); the deadline ends the downloads with a retryable ``FetchFailed``.
    """
    if chain.issuer is not None:
        return chain.issuer
    if chain.self_signed:
        raise IssuerNotFound(
            "the certificate is self-signed: no CA answers for it", retryable=False
        )
    urls = ca_issuer_urls(chain.leaf)
    if not urls:
        raise IssuerNotFound(
            "the issuer is not among the certificates given (tls.crt and ca.crt in a Secret), and "
            "the certificate has no caIssuers URL",
            retryable=False,
        )
    attempt = attempt or Attempt()
    room = attempt.room(keep=1)
    skipped = _skipped(urls, room, "caIssuers URLs", attempt.max_urls)
    problems = []
    for url in urls[:room]:
        try:
            resp = await attempt.send(fetch, HttpRequest(method="GET", url=url, accept=""), url=url)
            if resp.status != 200:
                raise FetchFailed(f"HTTP {resp.status}")
            for candidate in load_certificates(resp.body, what=f"the certificate at {url}"):
                if signed_by(chain.leaf, candidate):
                    return candidate
            problems.append(f"{url}: no certificate there signed the leaf")
        except DeadlinePassed:
            raise attempt.expired("no issuer certificate from caIssuers") from None
        except (FetchFailed, ChainInvalid) as exc:
            problems.append(f"{url}: {exc}")
    raise IssuerNotFound(
        "issuer not in the chain; caIssuers gave none: " + "; ".join(problems) + skipped
    )


def responder_urls(leaf: x509.Certificate, override: str | None = None) -> list[str]:
    """Where to ask: the override alone when set, else the AIA OCSP URLs in order."""
    if override:
        return [override]
    return ocsp_urls(leaf)


async def ask(
    url: str, der: bytes, *, fetch: Fetch, attempt: Attempt | None = None
) -> HttpResponse:
    """One responder: GET when short enough, POST when the GET is refused or too long."""
    attempt = attempt or Attempt()
    refused: list[str] = []
    for request in http_requests(url, der):
        resp = await attempt.send(fetch, request, url=url)
        if resp.status == 200:
            return resp
        refused.append(f"{request.method} got HTTP {resp.status}")
    raise FetchFailed(f"{url}: " + ", ".join(refused))


def _check_nonce(query: Query, der: bytes) -> None:
    if query.nonce is None:
        return
    try:
        echoed = parse_response(der).extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return  # responders may ignore nonces (RFC 8954 2.1); the signature still binds the rest
    except Exception as exc:
        raise ResponseMalformed(f"unreadable nonce extension: {exc}") from None
    if echoed != query.nonce:
        raise NonceMismatch("the response echoes a nonce we did not send")


def _fresh_until(resp: HttpResponse, now: datetime.datetime) -> datetime.datetime | None:
    if resp.fresh_for is None or not 0 < resp.fresh_for < 10 * 365 * 86400:
        return None
    return now + datetime.timedelta(seconds=resp.fresh_for)


async def obtain_staple(
    chain: Chain,
    *,
    fetch: Fetch,
    clock: Clock,
    config: StaplingConfig | None = None,
    held: Staple | None = None,
    override_url: str | None = None,
    attempt: Attempt | None = None,
) -> Fetched:
    """Fetch and verify a staple for ``chain.leaf``; raise the OCSPError that explains why not.

    Everything this asks the network, issuer downloads included, fits in ``attempt`` (a fresh
    one with the default limits when not given): when its deadline passes, a retryable
    ``FetchFailed`` names the URLs tried and the limit.
    """
    config = config or StaplingConfig()
    attempt = attempt or Attempt()
    urls = responder_urls(chain.leaf, override_url)
    if not urls:
        raise NoResponder("the certificate has no OCSP responder URL (AIA id-ad-ocsp)")
    issuer = await resolve_issuer(chain, fetch=fetch, attempt=attempt)
    query = build_query(chain.leaf, issuer, hash_name=config.hash_name, nonce=config.nonce)
    room = attempt.room()
    skipped = _skipped(urls, room, "responder URLs", attempt.max_urls)
    errors: list[tuple[str, OCSPError]] = []
    for url in urls[:room]:
        try:
            resp = await ask(url, query.der, fetch=fetch, attempt=attempt)
            staple = verify_response(
                resp.body,
                cert_id=query.cert_id,
                issuer=issuer,
                now=clock(),
                policy=config.verify,
                held=held,
            )
            _check_nonce(query, resp.body)
        except DeadlinePassed:
            raise attempt.expired("no verified response") from None
        except OCSPError as exc:
            errors.append((url, exc))
            continue
        fresh_until = _fresh_until(resp, clock())
        return Fetched(staple=staple, responder_url=url, issuer=issuer, fresh_until=fresh_until)
    if not errors:  # only when a caller spent the attempt's URLs before: nothing was asked
        raise FetchFailed("no URL left to ask in this attempt" + skipped)
    first_url, first = errors[0]
    if len(errors) > 1:
        first.message += " (also failed: " + "; ".join(f"{u}: {e}" for u, e in errors[1:]) + ")"
    first.message = (
        f"{first_url}: {first.message}" if first_url not in first.message else first.message
    ) + skipped
    first.args = (first.message,)
    raise first
