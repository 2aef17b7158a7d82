"""The ingress's supervisor process: informers → snapshot → workers; health and metrics.

It binds one listening socket per worker with SO_REUSEPORT (the kernel spreads connections
across them), starts the workers with their sockets and a control channel, and restarts a
worker that dies (its socket, and the connections queued on it, survive). Every change seen
by an informer schedules a rebuild 20 ms later; a snapshot that differs from the last one is
sent to every worker, so a new staple or certificate reaches new handshakes well within a
second. SIGTERM stops the informers and drains the workers.

The ingress is shared by every tenant, so nothing one of them writes may stop it: the builder
judges each Secret on its own (``snapshots``), and a build or send that fails anyway is
logged (with its traceback, once), counted, and retried on the next change and after
``RETRY`` seconds, while the workers keep the previous configuration; /readyz says so. A
Secret the builder cannot use is logged once per version, counted by reason, and reported by
a Warning Event on each Ingress that names it; a host left out of an Ingress (another
namespace holds it, or its certificate does not cover it: ``claims``) likewise, on that Ingress.
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

from ocsp_stapler.ingress import channel, claims
from ocsp_stapler.ingress.metrics import IngressCollector
from ocsp_stapler.ingress.settings import IngressSettings
from ocsp_stapler.ingress.snapshots import REASONS, SecretProblem, SnapshotBuilder
from ocsp_stapler.ingress.ticket_keys import new_key
from ocsp_stapler.k8s.client import ApiClient, Credentials, resource_path
from ocsp_stapler.k8s.events import EventPoster
from ocsp_stapler.k8s.informers import Informer
from ocsp_stapler.names import INGRESS_CONTROLLER, TLS_SECRET_TYPE
from ocsp_stapler.ocsp.responses import VerifyPolicy

logger = logging.getLogger("ocsp_stapler.ingress")

DEBOUNCE = 0.02
RETRY = 5.0
"""Seconds after a failed build or send before it is tried again (changes try at once)."""
EVENT_POSTS = 4
"""Events posted at the same time (a burst of broken Secrets must not flood the API)."""


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


def _effect(p: SecretProblem) -> str:
    if p.served:
        return "its hosts are served without a staple"
    return "its hosts are not served (clients get the default certificate)"


class Supervisor:
    def __init__(self, settings: IngressSettings, *, credentials: Credentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.collector = IngressCollector(REASONS, claims.REASONS)
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
            verify_policy=VerifyPolicy(require_next_update=settings.require_next_update),
        )
        self.snapshot: dict[str, Any] | None = None
        self._snapshot_digest = ""
        self._rebuild: asyncio.TimerHandle | None = None
        self.stopping = False
        self.lame_duck = False
        """Between SIGTERM and the drain: /readyz says 503, the workers still serve."""
        self.sent = asyncio.Event()
        self.updates = 0
        self.publish_error: str | None = None
        """Why the last configuration could not be built or sent (None once one was)."""
        self.events: EventPoster | None = None
        self._publishing = asyncio.Lock()
        self._retry: asyncio.TimerHandle | None = None
        self.retry_delay = RETRY
        """Seconds before a failed build or send is tried again (absent any change)."""
        self._errors_logged: set[str] = set()
        self._announced: set[tuple[str, str, str]] = set()
        self._refusals_seen: set[claims.Refusal] = set()
        self._posted: set[tuple[str, str, str, str]] = set()
        self._posting = asyncio.Semaphore(EVENT_POSTS)
        self._background: set[asyncio.Task[Any]] = set()
        self.ticket_key = new_key() if settings.session_tickets else b""
        """The session-ticket key every worker uses now (memory only; never logged)."""

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
        self._in_background(self.publish())

    def _in_background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._background.discard)

    def build(self) -> dict[str, Any]:
        return self.builder.build(
            ingresses=self._objects("ingresses"),
            classes=self._objects("classes"),
            services=self._objects("services"),
            slices=self._objects("slices"),
            secrets=self._objects("secrets"),
        )

    async def publish(self) -> None:
        """Build and send a configuration; never raises (one at a time, so that workers get
        snapshots in the order they were built)."""
        async with self._publishing:
            try:
                snapshot = self.build()
                digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()
            except Exception as exc:
                self._failed("build", exc)
                return
            self._report_problems()
            self._report_refusals()
            if digest == self._snapshot_digest:
                self.publish_error = None
                return
            self.snapshot, self._snapshot_digest = snapshot, digest
            self.updates += 1
            sent = [await self._send(worker, snapshot) for worker in self.workers]
            if all(sent):
                self.publish_error = None
            else:
                self._snapshot_digest = ""  # so that the retry sends it again
            self.sent.set()
            logger.info(
                "configuration %d: %d certificate(s), %d backend(s)",
                self.updates,
                len(snapshot["certs"]),
                len(snapshot["routes"]["backends"]),
            )

    def _failed(self, stage: str, exc: Exception) -> None:
        """Log (with the traceback the first time), count, and try again later."""
        self.collector.publish_failures[stage] += 1
        self.publish_error = f"{stage}: {exc!r}"[:500]
        signature = f"{stage} {type(exc).__name__} {exc}"
        if signature not in self._errors_logged:
            self._errors_logged.add(signature)
            logger.exception(
                "the configuration could not be %s; the previous one stays in place",
                "built" if stage == "build" else "sent",
            )
        else:
            logger.warning("the configuration could not be %s again: %r", stage, exc)
        if self._retry is None and not self.stopping:

            def retry() -> None:
                self._retry = None
                self.changed()

            self._retry = asyncio.get_running_loop().call_later(self.retry_delay, retry)

    async def _send(self, worker: WorkerHandle, snapshot: dict[str, Any]) -> bool:
        if worker.writer is None:
            return True
        try:
            await channel.send(worker.writer, snapshot)
        except (ConnectionError, OSError) as exc:  # it died: restarted with the latest one
            logger.warning("worker %d did not take the configuration: %s", worker.index, exc)
        except Exception as exc:
            self._failed("send", exc)
            return False
        return True

    # ------------------------------------------------------------ Secret problems

    def _report_problems(self) -> None:
        """Count the builder's Secret problems; log each new one once and post a Warning
        Event on every Ingress that names the Secret (once per Ingress and problem)."""
        problems = self.builder.problems
        counts = dict.fromkeys(REASONS, 0)
        announced: set[tuple[str, str, str]] = set()
        posted: set[tuple[str, str, str, str]] = set()
        for p in problems.values():
            counts[p.reason] = counts.get(p.reason, 0) + 1
            key = (p.secret, p.reason, p.digest)
            announced.add(key)
            if key not in self._announced:
                logger.warning("Secret %s: %s: %s; %s", p.secret, p.reason, p.message, _effect(p))
            for ref in self.builder.referrers.get(p.secret, []):
                post_key = (f"{ref['namespace']}/{ref['name']}/{ref['uid']}", *key)
                posted.add(post_key)
                if post_key not in self._posted and self.events is not None:
                    self._in_background(self._post(ref, p))
        self.collector.secret_problems = counts
        self._announced, self._posted = announced, posted

    def _report_refusals(self) -> None:
        """Count the hosts left out; log each new refusal once and post it as a Warning
        Event on the Ingress that lost (once while it lasts)."""
        counts = dict.fromkeys(claims.REASONS, 0)
        seen = set(self.builder.refusals)
        for r in seen:
            counts[r.reason] = counts.get(r.reason, 0) + 1
            if r in self._refusals_seen:
                continue
            logger.warning("Ingress %s: %s: %s", r.ingress, r.reason, r.message)
            ref = self.builder.ingress_refs.get(r.ingress)
            if ref is not None and self.events is not None:
                self._in_background(self._warn(ref, r.reason, r.message))
        self.collector.refused_hosts = counts
        self._refusals_seen = seen

    async def _post(self, ingress: dict[str, str], p: SecretProblem) -> None:
        await self._warn(ingress, p.reason, f"TLS Secret {p.secret}: {p.message}; {_effect(p)}")

    async def _warn(self, ingress: dict[str, str], reason: str, message: str) -> None:
        if self.events is None:
            return
        async with self._posting:
            await self.events.post(ingress, type="Warning", reason=reason, message=message)

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
        if self.ticket_key:  # before the first snapshot: its contexts are built with it
            await self._send(worker, self._ticket_message())
        if self.snapshot is not None:
            await self._send(worker, self.snapshot)
        if self.lame_duck:  # restarted during the shutdown delay
            await self._send(worker, {"lame_duck": True})

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

    def _ticket_message(self) -> dict[str, Any]:
        return {
            "ticket_key": self.ticket_key.hex(),
            "lifetime": self.settings.ticket_key_rotation_seconds,
        }

    async def _rotate_ticket_keys(self) -> None:
        """A new session-ticket key for every worker each rotation period."""
        while not self.stopping:
            await asyncio.sleep(self.settings.ticket_key_rotation_seconds)
            self.ticket_key = new_key()
            message = self._ticket_message()
            for worker in self.workers:
                await self._send(worker, message)

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
            # Ready once a configuration was sent, even if a later one failed: taking every
            # tenant off the Service for it would be worse than serving the previous one.
            ready = self.alive() and self.sent.is_set() and not self.lame_duck
            text = "ready" if ready else "shutting down" if self.lame_duck else "not ready"
            if self.publish_error is not None:
                text += f"; the last configuration failed ({self.publish_error}); " + (
                    "the previous one is served" if self.sent.is_set() else "none sent yet"
                )
            return web.Response(text=text, status=200 if ready else 503)

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
            self.events = EventPoster(
                api, clock=utcnow, reporting_controller=INGRESS_CONTROLLER, action="Serve"
            )
            self._make_informers(api)
            tasks = [loop.create_task(i.run()) for group in self.informers.values() for i in group]
            for worker in self.workers:
                await self._spawn(worker)
            tasks.append(loop.create_task(self._watch_workers()))
            if self.ticket_key:
                tasks.append(loop.create_task(self._rotate_ticket_keys()))
            logger.info(
                "ingress: %d worker(s), https %s:%d",
                len(self.workers),
                s.bind_address,
                s.https_port,
            )
            await stop.wait()
            await self._lame_duck()
            self.stopping = True
            if self._retry is not None:
                self._retry.cancel()
            tasks += self._background
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._stop_workers()
        if runner is not None:
            await runner.cleanup()

    async def _lame_duck(self) -> None:
        """Serve on, not ready, for the shutdown delay: Kubernetes removes the pod from the
        Service's endpoints while it still accepts, and keep-alive clients are told to
        reconnect (elsewhere), so a rollout fails no request and resets no connection."""
        delay = self.settings.shutdown_delay_seconds
        if delay <= 0:
            return
        self.lame_duck = True
        logger.info("stopping: not ready, serving %.1f s more before draining", delay)
        for worker in self.workers:
            await self._send(worker, {"lame_duck": True})
        await asyncio.sleep(delay)

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
