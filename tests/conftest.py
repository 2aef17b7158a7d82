"""Shared fixtures: one real control plane per test run, a fresh namespace per test.

The control plane (etcd + kube-apiserver compiled from source, see hack/devcluster) is
started once per session, lazily, by the first test that asks for ``cluster``; tests that do
not need it never pay for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from devcluster.controlplane import ControlPlane, running

from ocsp_stapler.k8s.client import ApiClient, load_credentials, resource_path
from support.responders import ScriptedServer


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
    """A namespace of this test's own, deleted after it (nothing finalizes it: no controllers)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await api.create(
        resource_path(api_version="v1", plural="namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    await api.delete(resource_path(api_version="v1", plural="namespaces", name=name))


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedServer]:
    server = await ScriptedServer().start()
    yield server
    await server.stop()
