"""OCSP responders for tests: the real ``openssl ocsp``, and a scriptable one for faults.

``OpenSSLResponder`` runs the real responder on a loopback port against a ``TestPKI`` index;
its options make the variants real CAs produce (delegated signer, key-hash responder ID,
no nextUpdate, a corrupted signature). ``ScriptedServer`` is a tiny aiohttp server for the
faults no real responder produces on purpose: hangs, trickles, huge bodies, wrong types,
redirects. Both listen on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from support.pki import TestPKI


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    log: Path, offset: int, proc: subprocess.Popen[bytes], timeout: float = 10.0
) -> None:
    """Wait for openssl's "waiting for OCSP client connections" line, printed once it listens.

    Not a probe connection: `openssl ocsp` blocks for good on a connection that closes
    without sending a request.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"responder exited with {proc.returncode}")
        with log.open("rb") as f:
            f.seek(offset)
            if b"waiting for OCSP client connections" in f.read():
                return
        time.sleep(0.02)
    raise TimeoutError(f"openssl ocsp not ready after {timeout} s")


class OpenSSLResponder:
    """``openssl ocsp -port`` for one PKI. ``signer`` names a PKI member: intermediate (the
    issuer signs itself), delegate, delegate-no-eku, delegate-expired, or stranger."""

    def __init__(
        self,
        pki: TestPKI,
        *,
        signer: str = "intermediate",
        validity_minutes: int | None = 24 * 60,
        options: tuple[str, ...] = (),
        log: Path | None = None,
    ) -> None:
        self.pki = pki
        self.signer = signer
        self.validity_minutes = validity_minutes
        self.options = options
        self.log = log or pki.dir / f"responder-{signer}-{id(self)}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpenSSLResponder:
        argv = [
            "openssl",
            "ocsp",
            "-index",
            str(self.pki.index_path),
            "-CA",
            str(self.pki.path("intermediate")),
            "-rsigner",
            str(self.pki.path(self.signer)),
            "-rkey",
            str(self.pki.key_path(self.signer)),
            "-ignore_err",
            *self.options,
        ]
        if self.validity_minutes is not None:
            argv += ["-nmin", str(self.validity_minutes)]
        for _attempt in range(3):
            self.port = free_port()
            offset = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [*argv, "-port", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                wait_ready(self.log, offset, self.proc)
                self.pki.on_index_change.append(self.poke)
                return self
            except RuntimeError:
                continue  # lost the port race: try another
        raise RuntimeError(f"openssl ocsp did not start: {self.log.read_text()[-2000:]}")

    def poke(self) -> None:
        """Make the responder notice a changed index.txt now.

        `openssl ocsp` checks the index for changes at the top of its accept loop, that is
        *before* it waits for the next request: a change made while it waits is only seen one
        request later. A throwaway request (answered with an error, logged as ``GET / ``)
        moves it through the loop once.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 2) as s,
        ):
            s.settimeout(2)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass

    def request_count(self) -> int:
        """OCSP requests this responder received (pokes excluded)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return sum(1 for ln in lines if "Received request" in ln and "GET / HTTP" not in ln)

    def stop(self) -> None:
        if self.poke in self.pki.on_index_change:
            self.pki.on_index_change.remove(self.poke)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> OpenSSLResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
