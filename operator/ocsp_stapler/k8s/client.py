"""A small asyncio client for the Kubernetes API: JSON in, JSON out, errors with names.

Why not the official ``kubernetes`` client for the calls: it is synchronous, and it turns every
object into generated model classes, which costs more than the network at 10,000 Secrets. We
do use it for what it is best at, reading credentials (kubeconfig files, exec plugins, the
in-cluster service-account token and its rotation), and send requests with aiohttp, which kopf
already brings. Objects stay plain dicts, the way kopf hands them to handlers.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from urllib.parse import quote, urlencode

import aiohttp

JsonObject = dict[str, Any]
PatchType = Literal["merge", "json", "strategic"]

_PATCH_CONTENT_TYPES: Mapping[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(Exception):
    """A non-2xx answer from kube-apiserver, with the Status object's reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""


class Conflict(ApiError):
    """409: a resourceVersion precondition failed, or the object already exists."""


class Invalid(ApiError):
    """422: the server rejected the object, e.g. a failed JSON-patch ``test`` operation."""


MAX_WATCH_LINE = 16 * 1024 * 1024
"""One watch event (a Secret is at most 1 MiB of data, ~1.4 MiB as JSON) must fit in this."""

_ERRORS: Mapping[int, type[ApiError]] = {404: NotFound, 409: Conflict, 422: Invalid}


def resource_path(
    *,
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The URL path of a collection or object: ``/api/v1/namespaces/ns/secrets/name``."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


@dataclass(frozen=True)
class Credentials:
    """Where the API server is, how to trust it, and who we are to it."""

    server: str
    ssl_context: ssl.SSLContext | bool
    """An SSLContext, or False when the kubeconfig says insecure-skip-tls-verify."""
    _source: Any = None
    """The kubernetes.client.Configuration behind it, asked again for rotating tokens."""

    def authorization(self) -> str | None:
        cfg = self._source
        if cfg is None:
            return None
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        # Kubeconfig tokens land under "BearerToken", in-cluster ones under "authorization".
        for key in ("BearerToken", "authorization"):
            value = cfg.get_api_key_with_prefix(key)
            if value:
                return str(value)
        return None


@dataclass(frozen=True)
class ConnectionFields:
    """The same credentials, spelled out for other clients (kopf's login)."""

    server: str
    ca_path: str | None
    insecure: bool
    certificate_path: str | None
    private_key_path: str | None
    scheme: str | None
    token: str | None


def connection_fields(credentials: Credentials) -> ConnectionFields:
    cfg = credentials._source
    auth = credentials.authorization() or ""
    scheme, _, token = auth.partition(" ")
    return ConnectionFields(
        server=credentials.server,
        ca_path=getattr(cfg, "ssl_ca_cert", None),
        insecure=credentials.ssl_context is False,
        certificate_path=getattr(cfg, "cert_file", None),
        private_key_path=getattr(cfg, "key_file", None),
        scheme=scheme or None,
        token=token or None,
    )


def load_credentials(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """Read credentials the way kubectl does: an explicit kubeconfig, $KUBECONFIG, ~/.kube/config,
    or the in-cluster service account when none of those exists."""
    # Imported late: the official client is heavy to import, and only needed here.
    from kubernetes import client as kclient  # noqa: PLC0415
    from kubernetes import config as kconfig  # noqa: PLC0415

    cfg = kclient.Configuration()
    try:
        kconfig.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)  # type: ignore[no-untyped-call]
    except kconfig.ConfigException:
        if kubeconfig is not None:
            raise
        kconfig.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    context_or_off: ssl.SSLContext | bool
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        context_or_off = ctx
    else:
        context_or_off = False
    return Credentials(server=cfg.host.rstrip("/"), ssl_context=context_or_off, _source=cfg)


class Api(Protocol):
    """The calls the operator makes on objects: what ``ApiClient`` sends to an API server,
    and what the simulation's in-memory API answers (``hack/simulation``)."""

    async def get(self, path: str, **params: str) -> JsonObject: ...

    async def create(self, path: str, body: JsonObject) -> JsonObject: ...

    async def patch(
        self, path: str, body: Any, *, patch_type: PatchType = "merge"
    ) -> JsonObject: ...

    async def delete(self, path: str) -> JsonObject: ...


REQUEST_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    OSError,
    TimeoutError,
    aiohttp.ClientError,
    ValueError,
)
"""What one request can raise: an answer refused, a connection lost, a timeout, a body that is
not JSON. Callers that isolate one object's failure catch exactly these."""

MAX_LIST_PAGES = 10_000
"""Pages a paged list follows at most (5 million objects at 500 a page): an API server that
keeps answering with a continue token cannot hold a caller for ever."""


async def list_pages(
    api: Api, path: str, params: Mapping[str, str] | None = None, *, page_size: int = 500
) -> AsyncIterator[JsonObject]:
    """Every item of a collection, read ``page_size`` at a time (limit and continue)."""
    token = ""
    for _ in range(MAX_LIST_PAGES):
        paging = {"limit": str(page_size), **({"continue": token} if token else {})}
        listed = await api.get(path, **(params or {}), **paging)
        for item in listed.get("items") or []:
            yield item
        token = (listed.get("metadata") or {}).get("continue") or ""
        if not token:
            return
    raise ApiError(500, "TooManyPages", f"{path}: still continuing after {MAX_LIST_PAGES} pages")


class ApiClient:
    """One connection pool to one API server. Use as ``async with ApiClient(creds) as api``."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        connections: int = 32,
        user_agent: str = "ocsp-stapler",
    ) -> None:
        self._creds = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._connections = connections
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections, ssl=self._creds.ssl_context)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": self._user_agent, "Accept": "application/json"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        auth = self._creds.authorization()
        if auth:
            headers["Authorization"] = auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Send one request; return the decoded JSON answer or raise ApiError."""
        if self._session is None:
            raise RuntimeError("ApiClient used outside 'async with'")
        url = self._creds.server + path
        if params:
            url += "?" + urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        headers = self._headers(content_type if data is not None else None)
        async with self._session.request(method, url, data=data, headers=headers) as resp:
            payload = await resp.read()
            if resp.status >= 400:
                raise _error_from(resp.status, payload)
            return json.loads(payload) if payload else {}

    async def get(self, path: str, **params: str) -> JsonObject:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("PUT", path, body=body)

    async def patch(self, path: str, body: Any, *, patch_type: PatchType = "merge") -> JsonObject:
        return await self.request(
            "PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[patch_type]
        )

    async def delete(self, path: str) -> JsonObject:
        return await self.request("DELETE", path)

    async def watch(
        self,
        path: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[JsonObject]:
        """Yield watch events ``{"type": ..., "object": ...}`` until the server ends the stream.

        Bookmarks are asked for, so that a caller can resume from a recent resourceVersion.
        A 410 Gone (resourceVersion too old) arrives as an ERROR event; the caller re-lists.
        """
        if self._session is None:
            raise RuntimeError("ApiClient used outside 'async with'")
        query = {
            **(params or {}),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            query["resourceVersion"] = resource_version
        url = f"{self._creds.server}{path}?{urlencode(query)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        async with self._session.get(url, headers=self._headers(), timeout=timeout) as resp:
            if resp.status >= 400:
                raise _error_from(resp.status, await resp.read())
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                if len(buffer) > MAX_WATCH_LINE:
                    raise ApiError(500, "WatchEventTooLarge", f"more than {MAX_WATCH_LINE} bytes")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)


def _error_from(status: int, payload: bytes) -> ApiError:
    reason, message = "", payload.decode(errors="replace")[:500]
    try:
        doc = json.loads(payload)
        reason, message = str(doc.get("reason", "")), str(doc.get("message", message))
    except (ValueError, AttributeError):
        pass
    return _ERRORS.get(status, ApiError)(status, reason, message)
