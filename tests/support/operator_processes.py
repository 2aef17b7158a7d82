"""``ocsp-stapler operator`` as real processes, for what only separate processes show: signals
(SIGKILL, SIGTERM, SIGSTOP), exit codes, and the endpoints a kubelet probes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from devcluster.controlplane import ControlPlane
from devcluster.responder import free_port

from support.responders import LOOPBACK_CIDRS

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


async def http_get(url: str) -> tuple[int, str] | None:
    """Status and body, or None while nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status, await r.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    health_port: int
    metrics_port: int

    async def health(self) -> tuple[int, str] | None:
        return await http_get(f"http://127.0.0.1:{self.health_port}/healthz")

    async def metric(self, name: str) -> float | None:
        """One unlabelled sample from /metrics (None: not served, or not there)."""
        got = await http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if got is None:
            return None
        found = re.search(rf"^{re.escape(name)} (\S+)$", got[1], re.MULTILINE)
        return float(found.group(1)) if found else None

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self) -> None:
        """Whatever state it is in (stopped included): gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def spawn_operator(cluster: ControlPlane, namespace: str, log: Path, **env: str) -> OperatorProcess:
    """The CLI watching ``namespace``, its health and metrics on free loopback ports; ``env``
    adds ``OCSP_STAPLER_<KEY>`` variables."""
    health_port, metrics_port = free_port(), free_port()
    environ = {
        **os.environ,
        "OCSP_STAPLER_HEALTH_PORT": str(health_port),
        "OCSP_STAPLER_METRICS_PORT": str(metrics_port),
        "OCSP_STAPLER_LOG_FORMAT": "json",
        "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS": ",".join(LOOPBACK_CIDRS),
        **{f"OCSP_STAPLER_{k.upper()}": v for k, v in env.items()},
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "operator", "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)],
            stdout=out, stderr=subprocess.STDOUT, env=environ,
        )  # fmt: skip
    return OperatorProcess(proc, log, health_port, metrics_port)
