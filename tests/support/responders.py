"""Responders for tests: the real ``openssl ocsp`` (from ``devcluster.responder``), and a
scriptable HTTP server for the faults no real responder produces on purpose: hangs, trickles,
huge bodies, wrong types, redirects. Both listen on 127.0.0.1 only, which the destination
guard refuses unless allowed: fetchers and operators in tests allow ``LOOPBACK_CIDRS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_CIDRS = ("127.0.0.0/8", "::1/128")
"""Loopback is refused by default (a certificate must not reach the operator's own pod):
every test responder listens there, so tests opt in with this allow list."""


class ScriptedServer:
    """An HTTP server on 127.0.0.1 whose every answer comes from ``handler`` (set per test)."""

    def __init__(self) -> None:
        self.handler: Handler = self._not_set
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @staticmethod
    async def _not_set(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="no handler set")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        return await self.handler(request)

    async def start(self) -> ScriptedServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = site._server.sockets if site._server else []
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def hang(request: web.Request) -> web.StreamResponse:
    """Accept, then never answer (until the test ends)."""
    await asyncio.sleep(3600)
    return web.Response()


def redirect_to(url: str, *, gate: asyncio.Event | None = None) -> Handler:
    """Send every request on to the real responder at ``url`` (once ``gate`` opens, if given):
    a responder that is slow exactly when a test wants it to be."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if gate is not None:
            await gate.wait()
        raise web.HTTPTemporaryRedirect(url + request.path_qs)

    return handler
