"""The local control plane is a real kube-apiserver, and our API client speaks to it correctly."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from devcluster.controlplane import REPO_ROOT, ControlPlane, bin_dir

from ocsp_stapler.k8s.client import ApiClient, Conflict, Invalid, NotFound, resource_path

CRD_FILE = REPO_ROOT / "crds" / "ocspstaples.ocsp-stapler.dev.yaml"


def test_reports_the_pinned_release(cluster: ControlPlane) -> None:
    gomod = (REPO_ROOT / "hack" / "controlplane" / "go.mod").read_text()
    pinned = next(
        line.split()[1]
        for line in gomod.splitlines()
        if line.strip().startswith("k8s.io/kubernetes ")
    )
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == pinned
    assert version["clientVersion"]["gitVersion"] == pinned


def test_kubectl_lists_the_system_namespaces(cluster: ControlPlane) -> None:
    out = cluster.kubectl("get", "ns", "-o", "name")
    assert {"namespace/default", "namespace/kube-system"} <= set(out.split())


def test_rbac_is_enforced_for_an_unprivileged_user(cluster: ControlPlane) -> None:
    out = cluster.kubectl(
        "auth", "can-i", "list", "secrets", "--as=system:serviceaccount:default:nobody", check=False
    )
    assert out.strip() == "no"


def _secret(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(b"cert").decode(),
            "tls.key": base64.b64encode(b"key").decode(),
        },
    }


async def test_secret_create_read_patch(api: ApiClient, namespace: str) -> None:
    collection = resource_path(api_version="v1", plural="secrets", namespace=namespace)
    path = resource_path(api_version="v1", plural="secrets", namespace=namespace, name="web")
    created = await api.create(collection, _secret("web", namespace))
    assert created["metadata"]["uid"]

    read = await api.get(path)
    assert base64.b64decode(read["data"]["tls.crt"]) == b"cert"

    staple = base64.b64encode(b"\x30\x03\x0a\x01\x00").decode()
    patched = await api.patch(
        path,
        {
            "metadata": {
                "annotations": {"ocsp-stapler.dev/enabled": "true"},
                "resourceVersion": read["metadata"]["resourceVersion"],
            },
            "data": {"tls.ocsp-staple": staple},
        },
    )
    assert patched["data"]["tls.ocsp-staple"] == staple
    assert patched["metadata"]["annotations"]["ocsp-stapler.dev/enabled"] == "true"
    assert patched["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]

    # The same precondition again is stale now: the server refuses with 409.
    with pytest.raises(Conflict):
        await api.patch(
            path, {"metadata": {"resourceVersion": read["metadata"]["resourceVersion"]}}
        )

    # A JSON-patch test on the certificate guards a write against a rotated tls.crt: 422.
    with pytest.raises(Invalid):
        await api.patch(
            path,
            [
                {
                    "op": "test",
                    "path": "/data/tls.crt",
                    "value": base64.b64encode(b"other").decode(),
                },
                {"op": "remove", "path": "/data/tls.ocsp-staple"},
            ],
            patch_type="json",
        )
    assert "tls.ocsp-staple" in (await api.get(path))["data"]

    with pytest.raises(NotFound):
        await api.get(
            resource_path(api_version="v1", plural="secrets", namespace=namespace, name="nope")
        )


async def test_watch_sees_a_change(api: ApiClient, namespace: str) -> None:
    collection = resource_path(api_version="v1", plural="secrets", namespace=namespace)
    listed = await api.get(collection)
    await api.create(collection, _secret("watched", namespace))
    seen = []
    async for event in api.watch(
        collection, resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=10
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if event["type"] == "ADDED":
            break
    assert seen == [("ADDED", "watched")]


def test_crd_applies_and_becomes_established(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/ocspstaples.ocsp-stapler.dev"
    )
    manifest = tmp_path / "staple.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "ocsp-stapler.dev/v1alpha1",
                "kind": "OCSPStaple",
                "metadata": {"name": "web", "namespace": namespace},
                "spec": {"secretName": "web"},
            }
        )
    )
    cluster.kubectl("apply", "-f", str(manifest))
    out = cluster.kubectl("get", "staples", "-n", namespace)
    header = out.splitlines()[0].split()
    assert header == ["NAME", "SECRET", "STATUS", "NEXT-UPDATE", "REFRESH-AT", "READY", "AGE"]
    # The schema is enforced by the server, not only documented.
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "ocsp-stapler.dev/v1alpha1",
                "kind": "OCSPStaple",
                "metadata": {"name": "bad", "namespace": namespace},
                "spec": {},
            }
        )
    )
    with pytest.raises(RuntimeError, match="secretName"):
        cluster.kubectl("apply", "-f", str(manifest))


def test_make_run_starts_a_cluster_kubectl_can_use(tmp_path: Path) -> None:
    """`make run` runs `python -m devcluster`: it prints a kubeconfig kubectl can use, keeps
    running, and stops cleanly (exit 0, everything gone) on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "--workdir", str(tmp_path / "run"), "--cluster-only"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        kubeconfig = None
        for line in proc.stdout:  # bounded: the process prints a few lines, then waits
            if "kubeconfig:" in line:
                kubeconfig = line.split("kubeconfig:", 1)[1].strip()
            if "Ctrl-C" in line:
                break
        assert kubeconfig, "make run did not print a kubeconfig"
        out = subprocess.run(
            [str(bin_dir() / "kubectl"), "--kubeconfig", kubeconfig, "get", "ns", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "namespace/default" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_make_run_demo_staples_and_both_clients_agree(tmp_path: Path) -> None:
    """The demo `make run` shows, in its non-interactive mode: a good staple, verified by
    openssl s_client and curl --cert-status through the bundled ingress."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "devcluster",
            "--workdir",
            str(tmp_path / "demo"),
            "--exit-when-ready",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    report = proc.stdout
    assert proc.returncode == 0, report + proc.stderr
    assert "openssl s_client -status: OCSP Response Status: successful, Cert Status: good" in report
    assert "curl --cert-status: ok, the staple verified" in report
    table = report.split("kubectl get staples -A", 1)[1].splitlines()
    assert table[1].split()[:4] == ["NAMESPACE", "NAME", "SECRET", "STATUS"]
    assert table[2].split()[:4] == ["demo", "demo-tls", "demo-tls", "good"]
    assert "operator.log, ingress.log" in report


def test_helm_is_built_at_the_pinned_version() -> None:
    gomod = (REPO_ROOT / "hack" / "controlplane" / "helm" / "go.mod").read_text()
    pinned = gomod.split("helm.sh/helm/v3", 1)[1].split()[0]
    out = subprocess.run(
        [str(bin_dir() / "helm"), "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(pinned)
