"""The real `openssl ocsp` responder on loopback, for a PKI made by ``devcluster.pki``.

Used by the tests and by `make run`'s demo. Its options make the variants real CAs produce:
a delegated signer, a key-hash responder ID, no nextUpdate, a corrupted signature.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from devcluster.pki import TestPKI


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
