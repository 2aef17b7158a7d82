"""Running `ocsp-stapler ingress` as a real process for tests, and the TLS clients that check it."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from devcluster.pki import Issued, TestPKI
from devcluster.responder import free_port

from ocsp_stapler.k8s.client import ApiClient, resource_path
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.stapling import obtain_staple
from support.backends import ingress_object, rule
from support.clocks import utcnow
from support.kube import secret_path, wait_for
from support.responders import LOOPBACK_CIDRS

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


@dataclass
class IngressProcess:
    proc: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    health_port: int
    log: Path

    async def get(self, path: str) -> tuple[int, str] | None:
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.get(
                    f"http://127.0.0.1:{self.health_port}{path}",
                    timeout=aiohttp.ClientTimeout(total=2),
                ) as r,
            ):
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def ready(self) -> None:
        async def probe() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingress exited: {self.log.read_text()[-3000:]}")
            got = await self.get("/readyz")
            return bool(got and got[0] == 200)

        await wait_for(probe, timeout=30, what="the ingress to be ready")

    def worker_pids(self) -> list[int]:
        """The worker processes (the supervisor's children)."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                after_name = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(after_name[1]) == self.proc.pid:
                children.append(int(stat.parent.name))
        return sorted(children)

    async def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 40)


StartIngress = Callable[..., Awaitable[IngressProcess]]


def start_ingress(
    *,
    kubeconfig: Path,
    namespace: str,
    log: Path,
    workers: int = 2,
    env: dict[str, str] | None = None,
    more_namespaces: tuple[str, ...] = (),
) -> IngressProcess:
    https_port, http_port, health_port = free_port(), free_port(), free_port()
    extra = [arg for ns in more_namespaces for arg in ("--namespace", ns)]
    argv = [
        CLI, "ingress", "--namespace", namespace, *extra, "--kubeconfig", str(kubeconfig),
        "--https-port", str(https_port), "--http-port", str(http_port),
        "--health-port", str(health_port), "--workers", str(workers), "--bind-address", "127.0.0.1",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    return IngressProcess(proc, https_port, http_port, health_port, log)


async def s_client(port: int, servername: str | None, *extra: str, ca: Path | None = None) -> str:
    """`openssl s_client -status` output (it prints the staple; it does not verify it).
    ``servername`` None: a ClientHello without SNI (``-noservername``)."""
    sni = ["-servername", servername] if servername is not None else ["-noservername"]
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *sni, "-status", *extra]
    if ca is not None:
        argv += ["-CAfile", str(ca)]
    # In a thread: the test's own loop runs the backends and must keep serving meanwhile.
    proc = await asyncio.to_thread(
        subprocess.run, argv, input=b"", capture_output=True, timeout=30, check=False
    )
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


async def curl(
    port: int, host: str, path: str = "/", *extra: str, ca: Path | None = None
) -> subprocess.CompletedProcess[str]:
    argv = ["curl", "-sS", "--max-time", "20", "--resolve", f"{host}:{port}:127.0.0.1", *extra]
    if ca is not None:
        argv += ["--cacert", str(ca)]
    argv.append(f"https://{host}:{port}{path}")
    return await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=40, check=False
    )


async def fetch_staple(pki: TestPKI, leaf: Issued) -> bytes:
    guard = DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)  # the test responder's address
    async with HttpFetcher(FetchSettings(guard=guard)) as fetch:
        got = await obtain_staple(assemble_chain(pki.chain_pem(leaf)), fetch=fetch, clock=utcnow)
    return got.staple.der


MakeSite = Callable[..., Awaitable[tuple[Issued, bytes | None]]]


async def put_staple(api: ApiClient, namespace: str, secret: str, der: bytes | None) -> None:
    value = base64.b64encode(der).decode() if der else None
    await api.patch(secret_path(namespace, secret), {"data": {"tls.ocsp-staple": value}})


def ingress_path(namespace: str) -> str:
    return resource_path(
        api_version="networking.k8s.io/v1", plural="ingresses", namespace=namespace
    )


async def publish(
    api: ApiClient,
    namespace: str,
    *,
    host: str,
    secret: str,
    service: str,
    name: str | None = None,
    path: str = "/",
    path_type: str = "Prefix",
) -> dict[str, Any]:
    """An Ingress of our class routing ``host`` to ``service``, with TLS from ``secret``."""
    return await api.create(
        ingress_path(namespace),
        ingress_object(
            namespace,
            name or f"ing-{service}-{host.replace('*', 'wild')}"[:60],
            rules=[rule(host, service, path, path_type)],
            tls=[{"hosts": [host], "secretName": secret}],
        ),
    )


def staple_in(s_client_output: str) -> str | None:
    """'good', 'revoked', 'unknown', or None when s_client saw no staple."""
    if "OCSP Response Status: successful" not in s_client_output:
        return None
    for status in ("good", "revoked", "unknown"):
        if f"Cert Status: {status}" in s_client_output:
            return status
    return None


async def events_on_ingress(api: ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Events posted about one Ingress."""
    listed = await api.get(
        resource_path(api_version="v1", plural="events", namespace=namespace),
        fieldSelector=f"involvedObject.kind=Ingress,involvedObject.name={name}",
    )
    return list(listed.get("items", []))
