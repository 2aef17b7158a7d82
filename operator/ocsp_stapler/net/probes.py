"""The small HTTP server every long-running part exposes: /healthz, /readyz and /metrics.

One place for the aiohttp plumbing (no signal handling of its own, no access log, stopped with
the context), so the operator and the sync sidecar differ only in what their routes answer.
Routes sharing a port share one server; a port of 0 serves nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


@contextlib.asynccontextmanager
async def serving(
    routes: Mapping[tuple[int, str], Handler],
    *,
    address: str = "0.0.0.0",  # noqa: S104 (probed and scraped from the pod network)
) -> AsyncIterator[None]:
    """Serve ``{(port, path): handler}`` until the context ends."""
    by_port: dict[int, list[tuple[str, Handler]]] = {}
    for (port, path), handler in routes.items():
        if port > 0:
            by_port.setdefault(port, []).append((path, handler))
    runners: list[web.AppRunner] = []
    try:
        for port, handlers in by_port.items():
            app = web.Application()
            for path, handler in handlers:
                app.router.add_get(path, handler)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, address, port).start()
        yield
    finally:
        for runner in runners:
            await runner.cleanup()
