"""From a certificate chain to a verified staple: the one straight walk every caller takes.

chain → issuer (from the bundle, else downloaded from AIA caIssuers and checked) → responder
URLs (an explicit override wins, else every AIA OCSP URL in order) → request → fetch (GET,
then POST when the GET is refused) → verify → Staple. Each responder URL is tried in turn
until one gives a response that verifies; the error kept is the first URL's, named with all.
"""

from __future__ import annotations

import datetime
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
)
from ocsp_stapler.ocsp.queries import HashName, Query, build_query, http_requests
from ocsp_stapler.ocsp.responses import Staple, VerifyPolicy, parse_response, verify_response
from ocsp_stapler.ocsp.transport import Fetch, HttpRequest, HttpResponse

Clock = Callable[[], datetime.datetime]


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


async def resolve_issuer(chain: Chain, *, fetch: Fetch) -> x509.Certificate:
    """The leaf's issuer: from the bundle, else from AIA caIssuers (and it must have signed)."""
    if chain.issuer is not None:
        return chain.issuer
    if chain.self_signed:
        raise IssuerNotFound(
            "the certificate is self-signed: no CA answers for it", retryable=False
        )
    urls = ca_issuer_urls(chain.leaf)
    if not urls:
        raise IssuerNotFound(
            "the issuer is not in tls.crt or ca.crt, and the certificate has no caIssuers URL",
            retryable=False,
        )
    problems = []
    for url in urls:
        try:
            resp = await fetch(HttpRequest(method="GET", url=url, accept=""))
            if resp.status != 200:
                raise FetchFailed(f"HTTP {resp.status}")
            for candidate in load_certificates(resp.body, what=f"the certificate at {url}"):
                if signed_by(chain.leaf, candidate):
                    return candidate
            problems.append(f"{url}: no certificate there signed the leaf")
        except (FetchFailed, ChainInvalid) as exc:
            problems.append(f"{url}: {exc}")
    raise IssuerNotFound("issuer not in the chain; caIssuers gave none: " + "; ".join(problems))


def responder_urls(leaf: x509.Certificate, override: str | None = None) -> list[str]:
    """Where to ask: the override alone when set, else the AIA OCSP URLs in order."""
    if override:
        return [override]
    return ocsp_urls(leaf)


async def ask(url: str, der: bytes, *, fetch: Fetch) -> HttpResponse:
    """One responder: GET when short enough, POST when the GET is refused or too long."""
    refused: list[str] = []
    for request in http_requests(url, der):
        resp = await fetch(request)
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
    if echoed != query.nonce:
        raise NonceMismatch("the response echoes a nonce we did not send")


async def obtain_staple(
    chain: Chain,
    *,
    fetch: Fetch,
    clock: Clock,
    config: StaplingConfig | None = None,
    held: Staple | None = None,
    override_url: str | None = None,
) -> Fetched:
    """Fetch and verify a staple for ``chain.leaf``; raise the OCSPError that explains why not."""
    config = config or StaplingConfig()
    urls = responder_urls(chain.leaf, override_url)
    if not urls:
        raise NoResponder("the certificate has no OCSP responder URL (AIA id-ad-ocsp)")
    issuer = await resolve_issuer(chain, fetch=fetch)
    query = build_query(chain.leaf, issuer, hash_name=config.hash_name, nonce=config.nonce)
    errors: list[tuple[str, OCSPError]] = []
    for url in urls:
        try:
            resp = await ask(url, query.der, fetch=fetch)
            staple = verify_response(
                resp.body,
                cert_id=query.cert_id,
                issuer=issuer,
                now=clock(),
                policy=config.verify,
                held=held,
            )
            _check_nonce(query, resp.body)
        except OCSPError as exc:
            errors.append((url, exc))
            continue
        return Fetched(staple=staple, responder_url=url, issuer=issuer)
    first_url, first = errors[0]
    if len(errors) > 1:
        first.message += " (also failed: " + "; ".join(f"{u}: {e}" for u, e in errors[1:]) + ")"
    first.message = (
        f"{first_url}: {first.message}" if first_url not in first.message else first.message
    )
    first.args = (first.message,)
    raise first
