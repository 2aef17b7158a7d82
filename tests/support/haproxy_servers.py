"""Debian's real HAProxy on loopback: one TLS frontend with a certificate, its ``.ocsp`` file
next to it, and an admin stats socket (the consumer and sidecar tests push staples into it)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devcluster.pki import Issued, TestPKI
from devcluster.responder import free_port

from support.kube import wait_for
from support.status_requests import stapled_this_update

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """
global
    stats socket {dir}/admin.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend tls
    bind 127.0.0.1:{port} ssl crt {dir}/site.pem
    http-request return status 200 content-type text/plain string "served by haproxy"
"""


@dataclass
class Haproxy:
    dir: Path
    port: int
    leaf: Issued
    host: str

    @property
    def socket(self) -> Path:
        return self.dir / "admin.sock"

    @property
    def ocsp_file(self) -> Path:
        return self.dir / "site.pem.ocsp"

    async def this_update(self) -> str | None:
        return await stapled_this_update(self.port, self.host)

    async def answering(self) -> None:
        """Wait until it handshakes and its runtime API socket exists."""

        async def up() -> bool | None:
            try:
                await self.this_update()
            except ConnectionError:
                return None
            return self.socket.exists() or None

        await wait_for(up, what="HAProxy to answer")


@contextmanager
def running(
    pki: TestPKI, leaf: Issued, host: str, *, ocsp_file: bytes | None = None
) -> Iterator[Haproxy]:
    """HAProxy serving ``leaf`` for ``host``, started with ``ocsp_file`` as its .ocsp."""
    # A short directory: a unix socket path has ~100 bytes at most.
    directory = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))
    server = Haproxy(dir=directory, port=free_port(), leaf=leaf, host=host)
    (directory / "site.pem").write_bytes(pki.chain_pem(leaf) + leaf.key_pem)
    if ocsp_file is not None:
        server.ocsp_file.write_bytes(ocsp_file)
    (directory / "haproxy.cfg").write_text(CONFIG.format(dir=directory, port=server.port))
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(directory / "haproxy.cfg")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)
