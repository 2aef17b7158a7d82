"""One simulated month: Secrets in an in-memory API, CAs behind a network, the real operator.

``simulate(scenario)`` builds the world on a virtual-time loop: it creates the Secrets (as a
user or cert-manager would), starts the operator's real ``Reconciler`` and ``Scheduler`` with
the watch of the in-memory API feeding ``observe`` (what kopf does), plays the scenario's
events (revocations, rotations) and lets the month pass. What happened is then judged by
``measures`` from the API's and the responders' records, not from the operator's.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.controller.eventing import EventRecorder
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import resource_path
from ocsp_stapler.names import (
    ENABLED,
    STAPLE_CERT_SHA256,
    STAPLE_KEY,
    TLS_CERT_KEY,
    TLS_SECRET_TYPE,
)
from simulation import vloop
from simulation.cas import DAY, Behaviour, SimCA, SimNetwork
from simulation.measures import History, Outcome, judge
from simulation.memory import MemoryApi


def _now() -> datetime.datetime:
    """Where a world's virtual time starts: now. cryptography stamps producedAt with the real
    time of signing (it cannot be set) and the verifier refuses a producedAt beyond its clock
    skew (5 min), so virtual time may start no earlier than the real time of the first
    signature; it only runs ahead of real time afterwards."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


PER_NAMESPACE = 100
"""Secrets per namespace (fewer when a scenario is played small: eight namespaces at least)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    story: str
    """What happens, in a sentence (the report's first column)."""
    behaviour: Behaviour = field(default_factory=Behaviour)
    secrets: int = 1000
    days: float = 30
    ca_issuers: bool = False
    """tls.crt holds the leaf alone: the issuer comes from the caIssuers URL."""
    staples_from_before: datetime.timedelta | None = None
    """Secrets start with a staple written before the operator (re)started, this old."""
    revoke_fraction: float = 0.0
    rotate_during_first_fetch: bool = False
    """cert-manager replaces each certificate while the first fetch for it is in flight."""
    hanging_namespace: bool = False
    """One namespace's certificates name a responder that never answers."""
    shared_fraction: float = 0.0
    """Secrets holding a copy of another Secret's certificate (a wildcard copied into many
    namespaces): they share fetches, failures and refresh times."""
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    seed: int = 1

    def scaled(self, secrets: int, days: float | None = None) -> Scenario:
        return replace(self, secrets=secrets, days=self.days if days is None else days)


def _pem_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


def _secret(name: str, namespace: str, crt_b64: str, key_b64: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": TLS_SECRET_TYPE,
        "metadata": {"name": name, "namespace": namespace, "annotations": {ENABLED: "true"}},
        "data": {TLS_CERT_KEY: crt_b64, "tls.key": key_b64},
    }


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.loop = asyncio.get_running_loop()
        self.start = _now()
        self.rand = random.Random(scenario.seed)  # noqa: S311 (the simulation's dice)
        self.api = MemoryApi(clock=lambda: self.now().strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.network = SimNetwork()
        self.history = History()
        self.ca = self.network.add(
            SimCA("main", clock=self.now, behaviour=scenario.behaviour, start=self.start)
        )
        self.hanging = (
            self.network.add(
                SimCA("hanging", clock=self.now, behaviour=Behaviour(hangs=True), start=self.start)
            )
            if scenario.hanging_namespace
            else None
        )
        self.serials_of: dict[str, list[int]] = defaultdict(list)
        self.healthy: set[str] = set()
        self.to_rotate: dict[int, str] = {}
        self._events: asyncio.Queue[tuple[str, dict[str, object]]] = asyncio.Queue()
        self.api.watch(self._seen)
        self.reconciler = Reconciler(
            api=self.api,
            fetch=self.network,
            settings=replace(scenario.settings, metrics_port=0, health_port=0),
            clock=self.now,
            metrics=Metrics(),
            events=EventRecorder(self.api, self.now),
            rand=self.rand.random,
            monotonic=self.loop.time,  # attempt deadlines in virtual time too
        )

    def now(self) -> datetime.datetime:
        return self.start + datetime.timedelta(seconds=self.loop.time())

    def _seen(self, plural: str, event: str, obj: dict[str, object]) -> None:
        if plural != "secrets":
            return
        meta = cast(dict[str, str], obj["metadata"])
        key = f"{meta['namespace']}/{meta['name']}"
        self.history.record(key, event, obj, self.now())
        self._events.put_nowait((event, obj))

    async def _deliver(self) -> None:
        """The watch: every change reaches ``observe`` in order, as kopf delivers it."""
        while True:
            event, obj = await self._events.get()
            await self.reconciler.observe(event, obj)

    def _rotate(self, serial: int) -> None:
        """cert-manager's renewal, landing while the operator's fetch is in flight."""
        key = self.to_rotate.pop(serial, None)
        if key is None:
            return
        namespace, name = key.split("/")
        path = resource_path(api_version="v1", plural="secrets", namespace=namespace, name=name)
        current = self.api.objects[path.rsplit("/", 1)[0]][name]
        leaf = self.ca.issue(f"{name}.example", ca_issuers=self.scenario.ca_issuers)
        self.serials_of[key].append(leaf.serial_number)
        body = {**current, "data": {**current["data"], TLS_CERT_KEY: self._chain_b64(leaf)}}
        annotations = dict(current["metadata"].get("annotations") or {})
        body["metadata"] = {**current["metadata"], "annotations": annotations}
        self.api.replace_now(path, body)

    def _chain_b64(self, leaf: x509.Certificate) -> str:
        pem = leaf.public_bytes(serialization.Encoding.PEM)
        if not self.scenario.ca_issuers:
            pem += self.ca.certificate_pem
        return base64.b64encode(pem).decode()

    async def populate(self) -> None:
        s = self.scenario
        key_b64 = base64.b64encode(self.ca.leaf_key_pem).decode()
        per_namespace = max(1, min(PER_NAMESPACE, s.secrets // 8))
        originals: list[x509.Certificate] = []
        for i in range(s.secrets):
            namespace, name = f"tenant-{i // per_namespace:03d}", f"site-{i:05d}"
            key = f"{namespace}/{name}"
            hanging = self.hanging is not None and i < per_namespace
            ca = self.hanging if hanging and self.hanging is not None else self.ca
            if originals and not hanging and self.rand.random() < s.shared_fraction:
                leaf = self.rand.choice(originals)  # a copy of another Secret's certificate
            else:
                leaf = ca.issue(f"{name}.example", ca_issuers=s.ca_issuers)
                if not hanging:
                    originals.append(leaf)
            self.serials_of[key].append(leaf.serial_number)
            if not hanging:
                self.healthy.add(key)
            body = _secret(name, namespace, self._chain_b64(leaf), key_b64)
            if s.staples_from_before is not None:
                # Signed before the operator started: expiring during the first days.
                age = s.staples_from_before * self.rand.random()
                der = self.ca.sign(leaf.serial_number, this_update=self.start - age)
                body["data"][STAPLE_KEY] = base64.b64encode(der).decode()  # type: ignore[index]
                body["metadata"]["annotations"][STAPLE_CERT_SHA256] = hashlib.sha256(  # type: ignore[index]
                    leaf.public_bytes(serialization.Encoding.DER)
                ).hexdigest()
            if s.rotate_during_first_fetch:
                self.to_rotate[leaf.serial_number] = key
            if (
                s.revoke_fraction
                and self.rand.random() < s.revoke_fraction
                and (leaf.serial_number not in self.ca.revoked)
            ):
                at = self.start + DAY * (2 + self.rand.random() * (s.days - 4))
                self.ca.revoke(leaf.serial_number, at)
            await self.api.create(resource_path(api_version="v1", plural="secrets",
                                                namespace=namespace), body)  # fmt: skip
        if s.rotate_during_first_fetch:
            self.ca.on_request = self._rotate

    async def run(self) -> Outcome:
        wall = time.perf_counter()
        await self.populate()
        delivery = asyncio.create_task(self._deliver())
        scheduler = asyncio.create_task(self.reconciler.scheduler.run())
        end = self.start + datetime.timedelta(days=self.scenario.days)
        await asyncio.sleep((end - self.now()).total_seconds())
        for task in (delivery, scheduler):
            task.cancel()
        await asyncio.gather(delivery, scheduler, return_exceptions=True)
        requests = dict(self.ca.requests.ocsp)
        behaviour = self.scenario.behaviour
        period = behaviour.regenerate_every
        period_of = (
            {
                serial: (self.ca.generated_at(serial, self.start), period)
                for serials in self.serials_of.values()
                for serial in serials
            }
            if period is not None
            else None
        )
        outcome = judge(
            self.history,
            requests=requests,
            serials_of=dict(self.serials_of),
            revoked=dict(self.ca.revoked),
            period_of=period_of,
            healthy=self.healthy,
            start=self.start,
            end=end,
        )
        return replace(outcome, wall_seconds=time.perf_counter() - wall)

    def record_of(self, key: str) -> object:
        namespace, name = key.split("/")
        return self.reconciler.records.get(SecretRef(namespace, name))


def simulate(scenario: Scenario) -> Outcome:
    """Play ``scenario`` on a fresh virtual-time loop and judge it."""

    async def main() -> Outcome:
        return await World(scenario).run()

    return vloop.run(main())
