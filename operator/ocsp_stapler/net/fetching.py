"""The HTTP fetcher the OCSP domain is given: aiohttp with every limit a hostile URL needs.

Limits (all in ``FetchSettings``): http/https only, and only URLs ``destinations.safe_url``
accepts, sent exactly as it returned them; connect and total timeouts (5 s, 10 s);
a body cap (64 KiB) enforced while reading, so a trickling or endless body costs at most that;
at most 3 redirects, never to another scheme, each hop guarded again; the destination guard
on every resolved address; an HTTP proxy from settings or from HTTP_PROXY/HTTPS_PROXY with
NO_PROXY honoured (nginx, HAProxy and ingress-nginx cannot use one); name lookups on a pool
of their own, capped per namespace (``lookups``).

Whatever the URL or the responder's headers, a call ends in an answer or in ``FetchFailed``
(``DestinationRefused`` for the guard's refusals): nothing else leaves ``__call__``.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import socket
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ocsp_stapler import __version__
from ocsp_stapler.net.destinations import DestinationGuard, redirect_target
from ocsp_stapler.net.lookups import Lookups
from ocsp_stapler.ocsp.errors import DestinationRefused, FetchFailed, OCSPError
from ocsp_stapler.ocsp.transport import HttpRequest, HttpResponse

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchSettings:
    connect_timeout: float = 5.0
    """Seconds to establish a connection (TCP and TLS)."""
    total_timeout: float = 10.0
    """Seconds for a whole exchange, redirects included: a trickling responder ends here."""
    max_body: int = 64 * 1024
    """Bytes; a larger answer is refused (OCSP responses are 1-4 KiB)."""
    max_redirects: int = 3
    proxy: str | None = None
    """http://[user:pass@]host:port for all responders; else HTTP_PROXY/HTTPS_PROXY apply."""
    use_environment_proxy: bool = True
    guard: DestinationGuard = field(default_factory=DestinationGuard)


Endpoint = tuple[str, int]
"""(host, port) as aiohttp resolves it."""


class GuardedResolver(AbstractResolver):
    """Resolves names, then drops every address the guard refuses (before any connect).

    ``proxies`` names the proxy endpoints in use: connecting to a proxy the cluster operator
    configured is not a certificate's choice, so its (host, port) alone is not guarded. A
    certificate URL that names the same endpoint and goes direct (NO_PROXY) is checked by the
    fetcher before it connects (``HttpFetcher._check_resolved``).
    """

    def __init__(
        self,
        guard: DestinationGuard,
        proxies: Callable[[], frozenset[Endpoint]] = frozenset,
        lookups: Lookups | None = None,
    ) -> None:
        self._guard = guard
        self._proxies = proxies
        self._lookups = lookups or Lookups()

    async def _lookup(self, host: str, port: int, family: int) -> list[ResolveResult]:
        """Like aiohttp's ThreadedResolver, on our own pool. An IPv6 address with a scope
        (link-local, which the guard denies by default) is left out."""
        try:
            infos = await self._lookups.getaddrinfo(
                host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
            )
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"cannot resolve {host[:200]}: {exc.strerror}") from None
        results: list[ResolveResult] = []
        for info_family, _, proto, _, address in infos:
            if info_family == socket.AF_INET6 and (len(address) < 4 or address[3]):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address[0]),
                    port=int(address[1]),
                    family=info_family,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        return results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._lookup(host, port, family)
        if (host, port) in self._proxies():
            return results
        allowed, refused = [], []
        for result in results:
            try:
                self._guard.check_address(result["host"])
            except DestinationRefused as exc:
                refused.append(exc.message)
                continue
            allowed.append(result)
        if not allowed:
            raise DestinationRefused(
                f"{host}: " + "; ".join(refused or ["no address"]), retryable=False
            )
        return allowed

    async def close(self) -> None:
        pass  # the pool belongs to the fetcher


def _no_proxy(host: str) -> bool:
    """NO_PROXY as urllib reads it (exact hosts, domain suffixes, '*')."""
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(bypass(host))


def _proxy_for(url: URL, settings: FetchSettings) -> str | None:
    host = url.host or ""
    if settings.use_environment_proxy and _no_proxy(host):
        return None
    if settings.proxy:
        return settings.proxy
    if settings.use_environment_proxy:
        return urllib.request.getproxies_environment().get(url.scheme)
    return None


def _endpoint(url: URL) -> Endpoint | None:
    return (url.host, url.port or 80) if url.host else None


def proxy_endpoints(settings: FetchSettings) -> frozenset[Endpoint]:
    """The (host, port) of every proxy a request could be sent through, read now (the
    environment's proxies can change while the fetcher lives)."""
    urls = [settings.proxy] if settings.proxy else []
    if settings.use_environment_proxy:
        environment = urllib.request.getproxies_environment()
        urls += [environment[s] for s in ("http", "https") if environment.get(s)]
    found = set()
    for text in urls:
        try:
            endpoint = _endpoint(URL(text))
        except (ValueError, TypeError):
            continue
        if endpoint:
            found.add(endpoint)
    return frozenset(found)


def _http_date(value: str | None) -> datetime.datetime | None:
    if not value or len(value) > 100:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def _seconds(value: str) -> int | None:
    value = value.strip().strip('"')
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 12 else None


def freshness(headers: Mapping[str, str]) -> float | None:
    """Seconds an answer stays current by its caching headers (RFC 9111 §4.2.1, as RFC 5019
    §6 has OCSP responders send them): ``max-age`` less ``Age``, else ``Expires`` less
    ``Date``. None for ``no-cache``/``no-store``, nothing usable, or an answer already stale.
    Whatever the headers hold, this returns a number or None."""
    directives: dict[str, str] = {}
    for part in str(headers.get("Cache-Control") or "")[:1000].split(","):
        name, _, value = part.strip().partition("=")
        directives.setdefault(name.strip().lower(), value)
    if "no-store" in directives or "no-cache" in directives:
        return None
    age = _seconds(str(headers.get("Age") or "0")) or 0
    if "max-age" in directives:
        max_age = _seconds(directives["max-age"])
        fresh = None if max_age is None else float(max_age - age)
    else:
        expires = _http_date(headers.get("Expires"))
        date = _http_date(headers.get("Date")) or datetime.datetime.now(datetime.UTC)
        fresh = None if expires is None else (expires - date).total_seconds() - age
    return fresh if fresh is not None and fresh > 0 else None


class HttpFetcher:
    """``async with HttpFetcher(settings) as fetch: await fetch(HttpRequest(...))``.

    One connection pool for all responders; safe to share between many concurrent fetches.
    """

    def __init__(
        self, settings: FetchSettings | None = None, *, lookups: Lookups | None = None
    ) -> None:
        self.settings = settings or FetchSettings()
        self._session: aiohttp.ClientSession | None = None
        self._own_lookups = lookups is None
        self.lookups = lookups or Lookups()

    async def __aenter__(self) -> Self:
        settings = self.settings
        resolver = GuardedResolver(
            settings.guard, lambda: proxy_endpoints(settings), lookups=self.lookups
        )
        connector = aiohttp.TCPConnector(resolver=resolver, limit=64, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # proxies are chosen per request in _proxy_for
            headers={"User-Agent": f"ocsp-stapler/{__version__}"},
            timeout=aiohttp.ClientTimeout(
                total=self.settings.total_timeout, sock_connect=self.settings.connect_timeout
            ),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_lookups:
            self.lookups.close()

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._session is None:
            raise RuntimeError("HttpFetcher used outside 'async with'")
        try:
            async with asyncio.timeout(self.settings.total_timeout):
                return await self._follow(self._session, request)
        except TimeoutError:
            raise FetchFailed(
                f"{request.url[:200]}: no complete answer within {self.settings.total_timeout:g} s"
            ) from None

    async def _follow(self, session: aiohttp.ClientSession, request: HttpRequest) -> HttpResponse:
        guard = self.settings.guard
        url = guard.check_url(request.url)  # the exact string sent: no second parser's say
        scheme = URL(url, encoded=True).scheme
        for _hop in range(self.settings.max_redirects + 1):
            try:
                target = URL(url, encoded=True)
                proxy = _proxy_for(target, self.settings)
                if proxy and target.host:
                    await self._check_resolved(target.host, None, direct=False)
                elif target.host and _endpoint(target) in proxy_endpoints(self.settings):
                    await self._check_resolved(target.host, target.port, direct=True)
                async with session.request(
                    request.method,
                    target,
                    data=request.body,
                    headers=dict(request.headers),
                    allow_redirects=False,
                    proxy=proxy,
                ) as resp:
                    if resp.status in _REDIRECTS:
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchFailed(f"{url}: HTTP {resp.status} without Location")
                        url = guard.check_url(redirect_target(url, location))
                        hop_scheme = URL(url, encoded=True).scheme
                        if hop_scheme != scheme:
                            raise DestinationRefused(
                                f"redirect from {scheme} to {hop_scheme} refused",
                                retryable=False,
                            )
                        continue
                    return await self._answer(resp, request)
            except (TimeoutError, OCSPError):
                raise  # a timeout is reported once, with the configured limit, by __call__
            except aiohttp.InvalidURL as exc:
                raise FetchFailed(f"invalid URL: {exc}") from None
            except aiohttp.ClientConnectorError as exc:
                raise FetchFailed(f"{url}: cannot connect: {exc.os_error}") from None
            except aiohttp.ClientError as exc:
                raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None
            except (ValueError, TypeError, OSError) as exc:
                # What aiohttp or yarl still objects to in a URL or header after safe_url
                # (UnicodeError is a ValueError): a verdict, not a crash.
                raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None
        raise FetchFailed(f"{url}: more than {self.settings.max_redirects} redirects")

    async def _check_resolved(self, host: str, port: int | None, *, direct: bool) -> None:
        """Judge what ``host`` resolves to before anything is sent its way.

        Through a proxy, the proxy resolves the name; we still refuse names that resolve
        inward, and a name only the proxy can resolve passes. Direct to a proxy's own endpoint
        (which the resolver lets through for the proxy's sake), the name must resolve here.
        """
        try:
            infos = await self.lookups.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            if direct:
                raise FetchFailed(f"{host}: cannot resolve: {exc}") from None
            return
        for info in infos:
            self.settings.guard.check_address(str(info[4][0]))

    async def _answer(self, resp: aiohttp.ClientResponse, request: HttpRequest) -> HttpResponse:
        cap = self.settings.max_body
        if resp.content_length is not None and resp.content_length > cap:
            raise FetchFailed(f"{resp.url}: body of {resp.content_length} bytes exceeds {cap}")
        if resp.status != 200:
            return HttpResponse(
                status=resp.status, content_type=resp.content_type, body=b"", url=str(resp.url)
            )
        if request.accept and resp.content_type != request.accept:
            raise FetchFailed(
                f"{resp.url}: content type {resp.content_type!r}, expected {request.accept!r}"
            )
        body = bytearray()
        async for chunk in resp.content.iter_chunked(16 * 1024):
            body += chunk
            if len(body) > cap:
                raise FetchFailed(f"{resp.url}: body exceeds {cap} bytes")
        return HttpResponse(
            status=200,
            content_type=resp.content_type,
            body=bytes(body),
            url=str(resp.url),
            fresh_for=freshness(resp.headers),
        )
