"""Fixtures for the operator: the real API server, the CRD, a PKI and responder, and an
operator running in-process (with an injectable clock) against one test namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from devcluster.controlplane import REPO_ROOT, ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import load_credentials
from support.clocks import FakeClock
from support.operators import RunningOperator, StartOperator


@pytest.fixture(scope="session")
def crd(cluster: ControlPlane) -> None:
    cluster.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/ocspstaples.ocsp-stapler.dev"
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("operator-pki")), "ec")


@pytest.fixture(scope="session")
def responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r


@pytest.fixture
async def start_operator(
    cluster: ControlPlane, crd: None, namespace: str
) -> AsyncIterator[StartOperator]:
    """Start operators watching this test's namespace; all are stopped after the test."""
    running: list[RunningOperator] = []

    async def start(*, clock: FakeClock | None = None, **overrides: Any) -> RunningOperator:
        settings = OperatorSettings(
            **{"namespaces": (namespace,), "metrics_port": 0, "health_port": 0, **overrides}
        )
        op = RunningOperator(
            settings=settings, credentials=load_credentials(str(cluster.kubeconfig)), clock=clock
        )
        running.append(op)
        return await op.start()

    yield start
    for op in running:
        await op.shutdown()
