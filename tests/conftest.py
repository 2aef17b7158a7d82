"""Shared fixtures: one real control plane per test run, a fresh namespace per test, one PKI
with a real `openssl ocsp` responder, the CRD, and operators started in-process.

The control plane (etcd + kube-apiserver compiled from source, see hack/devcluster) is
started once per session, lazily, by the first test that asks for ``cluster``; tests that do
not need it never pay for it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from devcluster.controlplane import REPO_ROOT, ControlPlane, running
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import ApiClient, load_credentials
from support.clocks import FakeClock
from support.kube import temporary_namespace
from support.operators import RunningOperator, StartOperator
from support.responders import LOOPBACK_CIDRS, ScriptedServer

pytest_plugins = ["support.ingress_fixtures"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = Path(tmp_path_factory.mktemp("controlplane"))
    with running(workdir) as cp:
        yield cp
        if os.environ.get("OCSP_STAPLER_KEEP_LOGS"):
            print(cp.log_tail(50))


@pytest.fixture
async def api(cluster: ControlPlane) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_credentials(str(cluster.kubeconfig))) as client:
        yield client


@pytest.fixture
async def namespace(api: ApiClient) -> AsyncIterator[str]:
    """A namespace of this test's own, deleted after it."""
    async with temporary_namespace(api) as name:
        yield name


@pytest.fixture
async def other_namespace(api: ApiClient) -> AsyncIterator[str]:
    """A second namespace of this test's own (a second tenant's)."""
    async with temporary_namespace(api) as name:
        yield name


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer().start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def crd(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/ocspstaples.ocsp-stapler.dev"
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """One ECDSA PKI for the run (tests issue leaves of their own)."""
    return TestPKI(Path(tmp_path_factory.mktemp("pki")), "ec")


@pytest.fixture(scope="session")
def responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r


@pytest.fixture
async def start_operator(
    cluster: ControlPlane, crd: None, namespace: str
) -> AsyncIterator[StartOperator]:
    """Start operators watching this test's namespace; all are stopped after the test.

    Responders on loopback are allowed (every test responder is there) unless a test sets
    ``responder_allow_cidrs`` itself (``()`` for the defaults a deployment gets).
    """
    running: list[RunningOperator] = []

    async def start(
        *, clock: FakeClock | None = None, wait_ready: bool = True, **overrides: Any
    ) -> RunningOperator:
        defaults = {
            "namespaces": (namespace,),
            "metrics_port": 0,
            "health_port": 0,
            "responder_allow_cidrs": LOOPBACK_CIDRS,
        }
        settings = OperatorSettings(**{**defaults, **overrides})
        op = RunningOperator(
            settings=settings, credentials=load_credentials(str(cluster.kubeconfig)), clock=clock
        )
        running.append(op)
        return await op.start(wait_ready=wait_ready)

    yield start
    for op in running:
        await op.shutdown()
