"""`ocsp-stapler cleanup` against the real kube-apiserver, on what a real operator wrote.

The operator staples two Secrets and is stopped (an uninstall); beside them are what is not
the operator's: a staple someone else put into a Secret that never opted in, and an OCSPStaple
without the operator's label. The real CLI must list the operator's traces without touching
anything, then remove exactly those with --apply, refuse while an operator holds its Lease, and
re-read (never overwrite) a Secret that changed between its read and its patch.
"""

from __future__ import annotations

import datetime
import subprocess
from typing import Any

import pytest
from devcluster.controlplane import ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller.uninstall import clean
from ocsp_stapler.k8s.client import ApiClient, resource_path
from ocsp_stapler.names import LEASE_NAME, STAPLE_CERT_SHA256
from support.kube import b64, get_or_none, secret_path, tls_secret
from support.operator_processes import CLI
from support.operators import StartOperator
from support.staples import ENABLED, staple_path, stapled_secret

pytestmark = pytest.mark.usefixtures("crd")


def _staples(namespace: str) -> str:
    return resource_path(api_version="ocsp-stapler.dev/v1alpha1", plural="ocspstaples",
                         namespace=namespace)  # fmt: skip


def _cleanup(cluster: ControlPlane, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "cleanup", "--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace,
         *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def _versions(api: ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every Secret and OCSPStaple in the namespace."""
    versions = {}
    for kind, path in (("Secret", secret_path(namespace)), ("OCSPStaple", _staples(namespace))):
        for item in (await api.get(path))["items"]:
            versions[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return versions


async def _operator_made_two_staples(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    op = await start_operator()
    for name in ("a", "b"):
        await stapled_secret(api, namespace, name, pki, responder.url)
    await op.reconciler.drain()
    await op.shutdown()  # helm uninstall: the operator goes, its traces stay
    foreign = tls_secret("foreign", namespace, crt=b"-", extra={"tls.ocsp-staple": b"theirs"})
    await api.create(secret_path(namespace), foreign)
    await api.create(
        _staples(namespace),
        {"apiVersion": "ocsp-stapler.dev/v1alpha1", "kind": "OCSPStaple",
         "metadata": {"name": "hand-made"}, "spec": {"secretName": "foreign"}},
    )  # fmt: skip


async def test_a_dry_run_lists_then_apply_removes_exactly_the_operators_traces(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, cluster: ControlPlane,
) -> None:  # fmt: skip
    await _operator_made_two_staples(api, namespace, pki, responder, start_operator)
    before = await _versions(api, namespace)

    dry = _cleanup(cluster, namespace)
    assert dry.returncode == 0, dry.stderr
    assert await _versions(api, namespace) == before  # a dry run changes nothing
    lines = dry.stdout.splitlines()
    for name in ("a", "b"):
        assert (f"would Secret {namespace}/{name}: remove data tls.ocsp-staple, "
                f"remove annotation {STAPLE_CERT_SHA256}") in lines  # fmt: skip
        assert f"would OCSPStaple {namespace}/{name}: delete" in lines
    assert not [line for line in lines if "foreign" in line or "hand-made" in line]
    assert lines[-1] == "4 change(s) to make; run with --apply to make them"

    done = _cleanup(cluster, namespace, "--apply")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "4 change(s) made"
    for name in ("a", "b"):
        secret = await api.get(secret_path(namespace, name))
        assert "tls.ocsp-staple" not in secret["data"]
        assert set(secret["data"]) == {"tls.crt", "tls.key"}
        assert secret["metadata"]["annotations"] == ENABLED  # the user's opt-in stays
        assert await get_or_none(api, staple_path(namespace, name)) is None
    foreign = await api.get(secret_path(namespace, "foreign"))
    assert foreign["metadata"]["resourceVersion"] == before["Secret/foreign"]
    assert await get_or_none(api, staple_path(namespace, "hand-made")) is not None

    again = _cleanup(cluster, namespace, "--apply", "--include-opt-in")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "2 change(s) made"  # the opt-ins, on request
    for name in ("a", "b"):
        secret = await api.get(secret_path(namespace, name))
        assert not secret["metadata"].get("annotations")
    last = _cleanup(cluster, namespace, "--apply", "--include-opt-in")
    assert last.stdout.splitlines()[-1] == "0 change(s) made"


def _lease(renewed: datetime.datetime) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME},
        "spec": {
            "holderIdentity": "operator-0",
            "leaseDurationSeconds": 15,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }


async def test_apply_is_refused_while_an_operator_holds_its_lease(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, cluster: ControlPlane,
) -> None:  # fmt: skip
    await _operator_made_two_staples(api, namespace, pki, responder, start_operator)
    leases = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                           namespace=namespace)  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    await api.create(leases, _lease(now))
    before = await _versions(api, namespace)

    refused = _cleanup(cluster, namespace, "--apply")
    assert refused.returncode == 2
    assert f"an operator still runs: Lease {namespace}/{LEASE_NAME} (operator-0)" in (
        refused.stderr
    )
    assert await _versions(api, namespace) == before
    dry = _cleanup(cluster, namespace)  # a dry run warns, and still lists
    assert dry.returncode == 0
    assert "warning: an operator still runs" in dry.stderr

    # A Lease last renewed longer ago than its duration is a dead operator's: no refusal,
    # and it goes with the rest.
    lease = await api.get(f"{leases}/{LEASE_NAME}")
    await api.replace(f"{leases}/{LEASE_NAME}",
                      {**lease, "spec": _lease(now - datetime.timedelta(hours=1))["spec"]})  # fmt: skip
    done = _cleanup(cluster, namespace, "--apply")
    assert done.returncode == 0, done.stderr
    assert f"Lease {namespace}/{LEASE_NAME}: delete" in done.stdout.splitlines()
    assert "tls.ocsp-staple" not in (await api.get(secret_path(namespace, "a")))["data"]
    assert await get_or_none(api, f"{leases}/{LEASE_NAME}") is None


async def test_an_operator_running_elsewhere_refuses_apply_in_any_namespace(
    api: ApiClient, namespace: str, other_namespace: str, pki: TestPKI,
    responder: OpenSSLResponder, start_operator: StartOperator, cluster: ControlPlane,
) -> None:  # fmt: skip
    """The operator's Lease and pods live in its release namespace, not in the namespaces
    being cleaned: a cleanup limited to an application namespace must still see them."""
    await _operator_made_two_staples(api, namespace, pki, responder, start_operator)
    before = await _versions(api, namespace)
    release = other_namespace
    leases = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                           namespace=release)  # fmt: skip
    await api.create(leases, _lease(datetime.datetime.now(datetime.UTC)))
    refused = _cleanup(cluster, namespace, "--apply")
    assert refused.returncode == 2
    assert f"Lease {release}/{LEASE_NAME} (operator-0)" in refused.stderr
    await api.delete(f"{leases}/{LEASE_NAME}")

    # Leader election off: no Lease, but the chart's operator pod runs.
    await api.create(resource_path(api_version="v1", plural="serviceaccounts", namespace=release),
                     {"metadata": {"name": "default"}})  # fmt: skip
    pods = resource_path(api_version="v1", plural="pods", namespace=release)
    labels = {"app.kubernetes.io/name": "ocsp-stapler", "app.kubernetes.io/component": "operator"}
    await api.create(pods, {"metadata": {"name": "op", "labels": labels},
                            "spec": {"automountServiceAccountToken": False,
                                     "containers": [{"name": "op", "image": "ocsp-stapler"}]}})  # fmt: skip
    try:
        assert "still runs" not in _cleanup(cluster, namespace).stderr  # Pending: not running
        await api.patch(f"{pods}/op/status", {"status": {"phase": "Running"}})
        refused = _cleanup(cluster, namespace, "--apply")
        assert refused.returncode == 2
        assert f"an operator still runs: Pod {release}/op" in refused.stderr
        assert await _versions(api, namespace) == before
    finally:  # this control plane deletes no namespace's objects: the next test must not see it
        await api.delete(f"{pods}/op")


async def test_forced_apply_goes_on_despite_a_held_lease(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, cluster: ControlPlane,
) -> None:  # fmt: skip
    await _operator_made_two_staples(api, namespace, pki, responder, start_operator)
    leases = resource_path(api_version="coordination.k8s.io/v1", plural="leases",
                           namespace=namespace)  # fmt: skip
    await api.create(leases, _lease(datetime.datetime.now(datetime.UTC)))
    try:
        forced = _cleanup(cluster, namespace, "--apply", "--force")
        assert forced.returncode == 0, forced.stderr
        assert forced.stdout.splitlines()[-1] == "4 change(s) made"
    finally:  # held: cleanups in other namespaces would refuse (namespaces keep objects here)
        await api.delete(f"{leases}/{LEASE_NAME}")


class ChangesFirst:
    """The real API, except that just before the first patch of ``name`` someone else (a
    certificate renewal) changes that Secret: the patch meets a newer resourceVersion."""

    def __init__(self, api: ApiClient, namespace: str, name: str) -> None:
        self.api, self.path, self.patches = api, secret_path(namespace, name), 0

    async def get(self, path: str, **params: str) -> Any:
        return await self.api.get(path, **params)

    async def create(self, path: str, body: Any) -> Any:
        return await self.api.create(path, body)

    async def delete(self, path: str) -> Any:
        return await self.api.delete(path)

    async def patch(self, path: str, body: Any, *, patch_type: Any = "merge") -> Any:
        if path == self.path:
            self.patches += 1
            if self.patches == 1:
                await self.api.patch(path, {"data": {"tls.key": b64(b"renewed")}})
        return await self.api.patch(path, body, patch_type=patch_type)


async def test_a_secret_changed_between_read_and_patch_is_read_again_not_overwritten(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:  # fmt: skip
    await _operator_made_two_staples(api, namespace, pki, responder, start_operator)
    racing = ChangesFirst(api, namespace, "a")
    outcome = await clean(racing, namespaces=[namespace], staple_key="tls.ocsp-staple",  # type: ignore[arg-type]
                          apply=True)  # fmt: skip
    assert not outcome.failures
    assert racing.patches == 2  # refused once (the resourceVersion test), then re-read
    secret = await api.get(secret_path(namespace, "a"))
    assert secret["data"]["tls.key"] == b64(b"renewed")  # the renewal's write survived
    assert "tls.ocsp-staple" not in secret["data"]
