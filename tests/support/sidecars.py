"""``ocsp-stapler sync`` run as the real console script, with its health port on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devcluster.responder import free_port

from support.kube import wait_for

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float | None:
        _status, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    async def ready(self) -> None:
        async def probe() -> bool | None:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            return self.get("/readyz")[0] == 200 or None

        await wait_for(probe, timeout=20, what="the sidecar to be ready")

    async def metric_reaches(self, name: str, value: float) -> None:
        async def probe() -> bool | None:
            got = self.metric(name)
            return (got is not None and got >= value) or None

        await wait_for(probe, what=f"{name} to reach {value}")


@contextmanager
def sync_sidecar(
    *args: str, env: dict[str, str] | None = None, log_dir: Path, poll: float | None = 0.1
) -> Iterator[Sidecar]:
    """The sidecar looking every ``poll`` seconds (None: its default)."""
    port = free_port()
    log = log_dir / f"sidecar-{port}.log"
    polling = ["--poll", str(poll)] if poll is not None else []
    argv = [CLI, "sync", *args, *polling, "--health-port", str(port),
            "--health-address", "127.0.0.1"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})  # fmt: skip
    try:
        yield Sidecar(process=process, port=port, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
