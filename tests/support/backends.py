"""Backends for ingress tests: a loopback HTTP server behind a selector-less Service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ocsp_stapler.k8s.client import ApiClient, resource_path


class EchoBackend:
    """Answers every request with JSON describing it (method, path, headers, body size)."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.requests = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if request.path.startswith("/slow"):
            await asyncio.sleep(float(request.query.get("s", "5")))
        if request.path.startswith("/big"):
            return web.Response(body=b"x" * int(request.query.get("n", "1000000")))
        if request.path.startswith("/stream"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(int(request.query.get("n", "3"))):
                await resp.write(f"chunk {i}\n".encode())
            await resp.write_eof()
            return resp
        payload = {
            "backend": self.name,
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body_bytes": len(body),
        }
        return web.Response(text=json.dumps(payload), content_type="application/json")

    async def start(self) -> EchoBackend:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


Answer = Callable[[int, bytes], bytes | None]
"""(request number on its connection, request head) -> the raw response, or None to close
the connection without answering."""


class RawBackend:
    """A loopback HTTP/1.1 backend answering with scripted bytes: the framings and faults a
    library server will not produce (interim responses, close-delimited bodies, trailers, a
    keep-alive connection dropped as the next request arrives)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for number in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                response = self.answer(number, head)
                if response is None:
                    return
                writer.write(response)
                await writer.drain()
                if b"connection: close" in response.lower():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def start(self) -> RawBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def expose(
    api: ApiClient, namespace: str, service: str, ports: list[int], *, port_name: str = "http"
) -> None:
    """A Service without selector and its EndpointSlice pointing at loopback ports."""
    await api.create(
        resource_path(api_version="v1", plural="services", namespace=namespace),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": 80, "targetPort": 8080}]},
        },
    )
    await set_endpoints(api, namespace, service, ports, port_name=port_name)


async def set_endpoints(
    api: ApiClient,
    namespace: str,
    service: str,
    ports: list[int],
    *,
    port_name: str = "http",
    ready: bool = True,
) -> None:
    """One EndpointSlice per backend port (EndpointSlice ports are per slice).

    The API server refuses loopback IPs in IPv4 EndpointSlices, so these use addressType
    FQDN with the name "127.0.0.1" (valid as a domain name), which the ingress resolves like
    any endpoint name: the traffic stays on loopback.
    """
    slices = resource_path(
        api_version="discovery.k8s.io/v1", plural="endpointslices", namespace=namespace
    )
    existing = await api.get(slices, labelSelector=f"kubernetes.io/service-name={service}")
    for item in existing.get("items", []):
        await api.delete(
            resource_path(
                api_version="discovery.k8s.io/v1",
                plural="endpointslices",
                namespace=namespace,
                name=item["metadata"]["name"],
            )
        )
    for i, port in enumerate(ports):
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-{i}",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "FQDN",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        }
        await api.create(slices, body)


def ingress_object(
    namespace: str,
    name: str,
    *,
    rules: list[dict[str, Any]],
    tls: list[dict[str, Any]] | None = None,
    class_name: str | None = "ocsp-stapler",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules}
    if class_name:
        spec["ingressClassName"] = class_name
    if tls:
        spec["tls"] = tls
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def rule(
    host: str | None, service: str, path: str = "/", path_type: str = "Prefix"
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": path_type,
                    "backend": {"service": {"name": service, "port": {"name": "http"}}},
                }
            ]
        }
    }
    if host:
        r["host"] = host
    return r
