"""One operator on a virtual clock, driven by hand: fast tests of the reconciler without a
cluster (the simulation's in-memory API, simulated CA and virtual-time loop).

Tests create Secrets (with or without a staple from before), let virtual time pass, and read
what the Secrets hold; the watch of the in-memory API feeds ``observe`` as kopf would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from simulation import vloop
from simulation.cas import Behaviour, SimCA, SimNetwork
from simulation.memory import MemoryApi

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.controller.eventing import EventRecorder
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.controller.records import SecretRecord
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import resource_path
from ocsp_stapler.names import (
    ENABLED,
    STAPLE_CERT_SHA256,
    STAPLE_KEY,
    TLS_CERT_KEY,
    TLS_SECRET_TYPE,
)
from ocsp_stapler.ocsp.transport import Fetch


class HandDriven:
    def __init__(
        self,
        *,
        behaviour: Behaviour | None = None,
        fetch: Fetch | None = None,
        settings: OperatorSettings | None = None,
        api: MemoryApi | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.start = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        self.api = api or MemoryApi()
        """Another operator's ``api``: this one is that one restarted (``adopt`` what is there)."""
        self.network = SimNetwork()
        self.ca = self.network.add(
            SimCA("hand", clock=self.now, behaviour=behaviour or Behaviour(), start=self.start)
        )
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.api.watch(lambda plural, event, obj: plural == "secrets"
                       and self._events.put_nowait((event, obj)))  # fmt: skip
        self.reconciler = Reconciler(
            api=self.api,
            fetch=fetch or self.network,
            settings=replace(settings or OperatorSettings(), metrics_port=0, health_port=0),
            clock=self.now,
            metrics=Metrics(),
            events=EventRecorder(self.api, self.now),
            rand=random.Random(1).random,  # noqa: S311 (the simulation's dice)
            monotonic=self.loop.time,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def now(self) -> datetime.datetime:
        return self.start + datetime.timedelta(seconds=self.loop.time())

    def path(self, namespace: str, name: str | None = None) -> str:
        return resource_path(api_version="v1", plural="secrets", namespace=namespace, name=name)

    async def create(
        self, namespace: str, name: str, leaf: x509.Certificate, staple: bytes | None = None
    ) -> None:
        pem = leaf.public_bytes(serialization.Encoding.PEM) + self.ca.certificate_pem
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Secret", "type": TLS_SECRET_TYPE,
            "metadata": {"name": name, "namespace": namespace, "annotations": {ENABLED: "true"}},
            "data": {TLS_CERT_KEY: base64.b64encode(pem).decode(), "tls.key": "AAAA"},
        }  # fmt: skip
        if staple is not None:
            body["data"][STAPLE_KEY] = base64.b64encode(staple).decode()
            digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
            body["metadata"]["annotations"][STAPLE_CERT_SHA256] = digest
        await self.api.create(self.path(namespace), body)

    async def adopt(self) -> None:
        """What kopf does at start: every Secret already there is seen once."""
        for collection, objects in list(self.api.objects.items()):
            if collection.endswith("/secrets"):
                for obj in list(objects.values()):
                    await self.reconciler.observe("ADDED", obj)

    def secret(self, namespace: str, name: str) -> dict[str, Any]:
        return self.api.objects[self.path(namespace)][name]

    def staple(self, namespace: str, name: str) -> ocsp.OCSPSingleResponse | None:
        data = self.secret(namespace, name)["data"].get(STAPLE_KEY)
        if data is None:
            return None
        return next(iter(ocsp.load_der_ocsp_response(base64.b64decode(data)).responses))

    def record(self, namespace: str, name: str) -> SecretRecord:
        return self.reconciler.records[SecretRef(namespace, name)]

    async def _deliver(self) -> None:
        while True:
            event, obj = await self._events.get()
            await self.reconciler.observe(event, obj)

    async def run_for(self, seconds: float) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._deliver()),
                asyncio.create_task(self.reconciler.scheduler.run()),
            ]
        await asyncio.sleep(seconds)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def played(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body on a fresh virtual-time loop."""
    vloop.run(test())
