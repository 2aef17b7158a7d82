"""Backends for ingress tests: a loopback HTTP server behind a selector-less Service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

from ocsp_stapler.k8s.client import ApiClient, resource_path


class AppBackend:
    """An aiohttp application on a loopback port: what each backend below serves differs,
    the start and stop do not."""

    shutdown_timeout = 60.0
    """How long ``stop`` waits for open requests (aiohttp's default)."""

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> Self:
        self.runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class EchoBackend(AppBackend):
    """Answers every request with JSON describing it (method, path, headers, body size)."""

    def __init__(self, name: str = "echo") -> None:
        super().__init__()
        self.name = name
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

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


Answer = Callable[[int, bytes], bytes | None]
"""(request number on its connection, request head) -> the raw response, or None to close
the connection without answering."""


class StreamBackend:
    """A loopback TCP server whose ``serve`` writes bytes by hand, for what no library server
    sends."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class RawBackend(StreamBackend):
    """A loopback HTTP/1.1 backend answering with scripted bytes: the framings and faults a
    library server will not produce (interim responses, close-delimited bodies, trailers, a
    keep-alive connection dropped as the next request arrives)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


class WebSocketBackend(AppBackend):
    """aiohttp's own WebSocket server behind the ingress.

    ``/echo`` upgrades and echoes text and binary messages; text commands make it do what a
    test needs from the far side of a tunnel: ``close CODE`` (close with that code),
    ``flood COUNT SIZE`` (send COUNT binary messages of SIZE bytes, each starting with its
    8-byte number, ``flooded`` counting the bytes sent so far), ``sink`` (stop reading until
    ``release`` is set, then count binary bytes until ``done`` and answer ``got N``).
    ``/plain`` answers even an upgrade request with an ordinary 200. Every request's headers
    and the peer it came from (the ingress's backend connection) are kept in ``seen``; the
    close code each WebSocket ended with in ``closes``.
    """

    shutdown_timeout = 2.0
    """Open WebSockets must not hold a test's teardown for aiohttp's default minute."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str], tuple[str, int]]] = []
        self.closes: list[int | None] = []
        self.server_closed: list[bool] = []
        """What each ``close CODE`` returned: True when the client's close frame came back."""
        self.flooded = 0
        self.release = asyncio.Event()

    def _record(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append((request.path, dict(request.headers), tuple(peer or ("", 0))))

    async def plain(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return web.Response(text="no websocket here")

    async def echo(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
                continue
            if msg.type != web.WSMsgType.TEXT:
                break
            command, *args = msg.data.split(" ")
            if command == "close":
                self.server_closed.append(await ws.close(code=int(args[0]), message=b"bye"))
            elif command == "flood":
                count, size = int(args[0]), int(args[1])
                for i in range(count):
                    await ws.send_bytes(i.to_bytes(8, "big") + b"f" * (size - 8))
                    self.flooded += size
            elif command == "sink":
                await self.release.wait()
                got = 0
                while (part := await ws.receive()).type == web.WSMsgType.BINARY:
                    got += len(part.data)
                await ws.send_str(f"got {got}")
            else:
                await ws.send_str(msg.data)
        self.closes.append(ws.close_code)
        return ws

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/echo", self.echo)
        app.router.add_route("*", "/{tail:.*}", self.plain)
        return app
