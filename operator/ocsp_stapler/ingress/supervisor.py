"""The ingress's watcher process: informers → snapshot → workers; health and metrics.

It binds one listening socket per worker with SO_REUSEPORT (the kernel spreads connections
across them), starts the workers with their sockets and a control channel, and restarts a
worker that dies (its socket, and the connections queued on it, survive). Every change seen
by an informer schedules a rebuild 20 ms later; a snapshot that differs from the last one is
sent to every worker, so a new staple or certificate reaches new handshakes well within a
second. SIGTERM stops the informers and drains the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ocsp_stapler.ingress import channel
from ocsp_stapler.ingress.metrics import IngressCollector
from ocsp_stapler.ingress.settings import IngressSettings
from ocsp_stapler.ingress.snapshots import SnapshotBuilder
from ocsp_stapler.k8s.client import ApiClient, Credentials, resource_path
from ocsp_stapler.k8s.informers import Informer
from ocsp_stapler.names import TLS_SECRET_TYPE

logger = logging.getLogger("ocsp_stapler.ingress")

DEBOUNCE = 0.02


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def self_signed_certificate() -> tuple[str, str]:
    """The certificate served when SNI matches nothing (like ingress-nginx's fake one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "ocsp-stapler ingress default certificate")]
    )
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def listening_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


@dataclass
class WorkerHandle:
    index: int
    https: socket.socket
    http: socket.socket | None
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: IngressSettings, *, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.collector = IngressCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self.workers: list[WorkerHandle] = []
        self.informers: dict[str, list[Informer]] = {}
        self.builder = SnapshotBuilder(
            class_name=settings.ingress_class,
            controller=settings.controller,
            staple_key=settings.staple_key,
            default_secret=settings.default_certificate,
            fallback_certificate=self_signed_certificate(),
            clock=utcnow,
        )
        self.snapshot: dict[str, Any] | None = None
        self._snapshot_digest = ""
        self._rebuild: asyncio.TimerHandle | None = None
        self.stopping = False
        self.sent = asyncio.Event()
        self.updates = 0

    # ---------------------------------------------------------------- configuration

    def _paths(self, api_version: str, plural: str) -> list[str]:
        if not self.settings.namespaces:
            return [resource_path(api_version=api_version, plural=plural)]
        return [
            resource_path(api_version=api_version, plural=plural, namespace=ns)
            for ns in self.settings.namespaces
        ]

    def _make_informers(self, api: ApiClient) -> None:
        kinds = {
            "ingresses": ("networking.k8s.io/v1", "ingresses", None),
            "services": ("v1", "services", None),
            "slices": ("discovery.k8s.io/v1", "endpointslices", None),
            "secrets": ("v1", "secrets", f"type={TLS_SECRET_TYPE}"),
        }
        for name, (api_version, plural, selector) in kinds.items():
            self.informers[name] = [
                Informer(
                    api,
                    path,
                    on_change=self.changed,
                    field_selector=selector,
                    name=f"{plural} {path}",
                )
                for path in self._paths(api_version, plural)
            ]
        self.informers["classes"] = [
            Informer(
                api,
                resource_path(api_version="networking.k8s.io/v1", plural="ingressclasses"),
                on_change=self.changed,
                name="ingressclasses",
            )
        ]

    def _objects(self, name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for informer in self.informers.get(name, []):
            merged.update(informer.objects)
        return merged

    def synced(self) -> bool:
        return all(i.synced.is_set() for group in self.informers.values() for i in group)

    def changed(self) -> None:
        if self._rebuild is None and self.synced():
            self._rebuild = asyncio.get_running_loop().call_later(DEBOUNCE, self._publish_soon)

    def _publish_soon(self) -> None:
        self._rebuild = None
        asyncio.get_running_loop().create_task(self.publish())

    def build(self) -> dict[str, Any]:
        return self.builder.build(
            ingresses=self._objects("ingresses"),
            classes=self._objects("classes"),
            services=self._objects("services"),
            slices=self._objects("slices"),
            secrets=self._objects("secrets"),
        )

    async def publish(self) -> None:
        snapshot = self.build()
        digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()
        if digest == self._snapshot_digest:
            return
        self.snapshot, self._snapshot_digest = snapshot, digest
        self.updates += 1
        for worker in self.workers:
            await self._send(worker, snapshot)
        self.sent.set()
        logger.info(
            "configuration %d: %d certificate(s), %d upstream(s)",
            self.updates,
            len(snapshot["certs"]),
            len(snapshot["routes"]["upstreams"]),
        )

    async def _send(self, worker: WorkerHandle, snapshot: dict[str, Any]) -> None:
        if worker.writer is None:
            return
        try:
            await channel.send(worker.writer, snapshot)
        except (ConnectionError, OSError) as exc:
            logger.warning("worker %d did not take the configuration: %s", worker.index, exc)

    # --------------------------------------------------------------------- workers

    async def _spawn(self, worker: WorkerHandle) -> None:
        parent, child = socket.socketpair()
        fds = [worker.https.fileno(), child.fileno()]
        argv = [
            sys.executable,
            "-m",
            "ocsp_stapler.ingress.worker",
            "--https-fd",
            str(worker.https.fileno()),
            "--control-fd",
            str(child.fileno()),
            "--settings",
            self.settings.worker_settings().to_json(),
        ]
        if worker.http is not None:
            fds.append(worker.http.fileno())
            argv += ["--http-fd", str(worker.http.fileno())]
        child.set_inheritable(True)
        worker.process = await asyncio.create_subprocess_exec(*argv, pass_fds=fds)
        child.close()
        reader, writer = await asyncio.open_connection(sock=parent, limit=channel.MAX_MESSAGE)
        worker.writer = writer
        worker.tasks = [asyncio.get_running_loop().create_task(self._listen(worker, reader))]
        if self.snapshot is not None:
            await self._send(worker, self.snapshot)

    async def _listen(self, worker: WorkerHandle, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, ValueError):
            while (message := await channel.receive(reader)) is not None:
                if "metrics" in message:
                    self.collector.snapshots[f"{worker.index}"] = message["metrics"]

    async def _watch_workers(self) -> None:
        """Restart a worker that exits while we are not stopping."""
        while not self.stopping:
            for worker in self.workers:
                proc = worker.process
                if proc is not None and proc.returncode is not None and not self.stopping:
                    logger.warning(
                        "worker %d exited with %s; restarting", worker.index, proc.returncode
                    )
                    for task in worker.tasks:
                        task.cancel()
                    if worker.writer is not None:
                        worker.writer.close()
                    await asyncio.sleep(0.5)
                    await self._spawn(worker)
            await asyncio.sleep(0.25)

    def alive(self) -> bool:
        return bool(self.workers) and all(
            w.process is not None and w.process.returncode is None for w in self.workers
        )

    # ---------------------------------------------------------------- health, metrics

    async def _health_app(self) -> web.AppRunner:
        async def healthz(_r: web.Request) -> web.Response:
            return web.Response(
                text="ok" if self.alive() else "workers down", status=200 if self.alive() else 500
            )

        async def readyz(_r: web.Request) -> web.Response:
            ready = self.alive() and self.sent.is_set()
            return web.Response(
                text="ready" if ready else "not ready", status=200 if ready else 503
            )

        async def metrics(_r: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.bind_address, self.settings.health_port).start()
        return runner

    # ------------------------------------------------------------------------ main

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
        s = self.settings
        for i in range(s.worker_count()):
            https = listening_socket(s.bind_address, s.https_port)
            http = listening_socket(s.bind_address, s.http_port) if s.http_port else None
            self.workers.append(WorkerHandle(index=i, https=https, http=http))
        runner = await self._health_app() if s.health_port else None
        async with ApiClient(self.credentials, user_agent="ocsp-stapler-ingress") as api:
            self._make_informers(api)
            tasks = [loop.create_task(i.run()) for group in self.informers.values() for i in group]
            for worker in self.workers:
                await self._spawn(worker)
            tasks.append(loop.create_task(self._watch_workers()))
            logger.info(
                "ingress: %d worker(s), https %s:%d",
                len(self.workers),
                s.bind_address,
                s.https_port,
            )
            await stop.wait()
            self.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stop_workers()
        if runner is not None:
            await runner.cleanup()

    async def _stop_workers(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.process is not None:
                try:
                    await asyncio.wait_for(
                        worker.process.wait(), self.settings.drain_timeout_seconds + 5
                    )
                except TimeoutError:
                    worker.process.kill()
                    await worker.process.wait()
            for task in worker.tasks:
                task.cancel()
            if worker.writer is not None:
                worker.writer.close()
            worker.https.close()
            if worker.http is not None:
                worker.http.close()
