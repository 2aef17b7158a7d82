"""The Helm chart: lint, render, install onto the real API server, least privilege proven with
the chart's own ServiceAccount token, Pod Security "restricted", and the image's entry points."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import values_reference
import yaml
from devcluster.controlplane import REPO_ROOT, ControlPlane, bin_dir
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.controller.running import LEASE_NAME
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import ApiClient, ApiError, load_credentials, resource_path
from support.kube import lease_holder, wait_for
from support.operators import RunningOperator
from support.responders import LOOPBACK_CIDRS
from support.staples import ENABLED, create_secret, staple_of

CHART = REPO_ROOT / "charts" / "ocsp-stapler"
KUBE_VERSION = "1.35.4"


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = [str(bin_dir() / "helm"), *args]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def render(*args: str) -> list[dict[str, Any]]:
    out = helm(
        "template",
        "rel",
        str(CHART),
        "--namespace",
        "system",
        "--kube-version",
        KUBE_VERSION,
        *args,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_lint_strict() -> None:
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART)).stdout


def _crds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}


def test_the_rendered_crds_are_the_crds_folder() -> None:
    """Every CRD of crds/ is rendered, exactly as that file but for the chart's labels and the
    keep annotation: a change to crds/ without `make chart-crds` fails here."""
    docs = render()
    chart_labels = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["labels"]
    chart_labels = {k: v for k, v in chart_labels.items() if k != "app.kubernetes.io/component"}
    sources = [yaml.safe_load(p.read_text()) for p in sorted((REPO_ROOT / "crds").glob("*.yaml"))]
    expected = {}
    for source in sources:
        meta = source["metadata"]
        meta["labels"] = {**meta.get("labels", {}), **chart_labels}
        meta["annotations"] = {**meta.get("annotations", {}), "helm.sh/resource-policy": "keep"}
        expected[meta["name"]] = source
    rendered = _crds(docs)
    assert sorted(rendered) == sorted(expected), "crds/ and the chart differ: run make chart-crds"
    for name, crd in rendered.items():
        assert crd == expected[name], f"{name} differs from crds/: run make chart-crds"
    # Helm's crds/ folder would install a CRD once and never upgrade it: the chart has none.
    assert not (CHART / "crds").exists()


def test_crds_enabled_and_keep_are_honoured() -> None:
    assert not _crds(render("--set", "crds.enabled=false"))
    for crd in _crds(render("--set", "crds.keep=false")).values():
        assert "annotations" not in crd["metadata"]


def test_every_value_is_documented() -> None:
    """Each key has a comment right above it, except inside free-form maps (resources, ...)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        key = re.match(r"^(\s*)([a-zA-Z]+):", line)
        if not key:
            continue
        indent = len(key.group(1))
        parents = [(d, k) for d, k in parents if d < indent]
        if not any(k in values_reference.FREE_FORM for _, k in parents):
            assert lines[i - 1].strip().startswith("#"), (
                f"values.yaml:{i + 1} has no comment: {line.strip()}"
            )
        parents.append((indent, key.group(2)))


@pytest.mark.parametrize(
    "bad",
    ["operator.revokedAction=delete", "ingress.mustStaplePolicy=maybe", "operator.concurrency=0",
     "operator.responder.denyCIDRs[0]=not-a-cidr", "operator.unknownKnob=1", "image.pullPolicy=Sometimes"],
)  # fmt: skip
def test_the_schema_refuses_bad_values(bad: str) -> None:
    proc = helm(
        "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "--set", bad, check=False
    )
    assert proc.returncode != 0
    assert "schema" in proc.stderr.lower() or "values don't meet" in proc.stderr.lower()


def test_defaults_render_everything_with_recommended_labels() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 2
    assert "IngressClass" in kinds
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ocsp-stapler"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]
    )
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    assert operator["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "operator",
        "--all-namespaces",
    ]


def test_watched_namespaces_get_roles_and_no_cluster_access_to_secrets(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "operator:\n  watchNamespaces: [team-a, team-b]\n  revokedAction: remove\n"
        "  responder:\n    denyCIDRs: [10.0.0.0/8]\n    proxy: http://proxy.internal:3128\n"
        "ingress:\n  enabled: false\nserviceMonitor:\n  enabled: true\n  labels: {release: prom}\n"
    )
    docs = render("-f", str(values))
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    assert sorted(roles) == ["system", "team-a", "team-b"]
    # In the release namespace only the Lease's Role: no Secrets there unless watched.
    assert [r["resources"] for r in roles["system"]["rules"]] == [["leases"], ["leases"]]
    for d in docs:
        if d["kind"] == "ClusterRole":
            for r in d["rules"]:
                assert "secrets" not in r["resources"], d["metadata"]["name"]
    assert not [d for d in docs if d["kind"] == "IngressClass"]
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    assert monitors[0]["metadata"]["labels"]["release"] == "prom"
    env = {
        e["name"]: e.get("value")  # None for one from the downward API
        for d in docs if d["kind"] == "Deployment"
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }  # fmt: skip
    assert env["OCSP_STAPLER_NAMESPACES"] == "team-a,team-b"
    assert env["OCSP_STAPLER_REVOKED_ACTION"] == "remove"
    assert env["OCSP_STAPLER_RESPONDER_DENY_CIDRS"] == "10.0.0.0/8"
    assert env["OCSP_STAPLER_PROXY"] == "http://proxy.internal:3128"


def _rules_verbs(docs: list[dict[str, Any]], name_part: str) -> dict[str, set[str]]:
    verbs: dict[str, set[str]] = {}
    for d in docs:
        if d["kind"] in ("ClusterRole", "Role") and name_part in d["metadata"]["name"]:
            for r in d["rules"]:
                for res in r["resources"]:
                    verbs.setdefault(res, set()).update(r["verbs"])
    return verbs


def test_rbac_is_least_privilege_on_paper() -> None:
    docs = render()
    op = _rules_verbs(docs, "operator")
    assert op["secrets"] == {"get", "list", "watch", "patch"}
    assert op["events"] == {"create"}  # each Event posted once (repeats are not posted)
    assert op["leases"] == {"get", "list", "watch", "create", "update"}
    assert set(op) == {"secrets", "ocspstaples", "ocspstaples/status", "events", "leases"}
    cluster_role = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("operator")
    )
    event_groups = {
        g for r in cluster_role["rules"] if "events" in r["resources"] for g in r["apiGroups"]
    }
    assert event_groups == {"events.k8s.io"}  # events.k8s.io/v1, with the reporting controller
    ing = _rules_verbs(docs, "ingress")
    ingress_role = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("ingress")
    )
    assert [r["apiGroups"] for r in ingress_role["rules"] if "events" in r["resources"]] == [
        ["events.k8s.io"]
    ]
    assert ing.pop("events") == {"create"}  # Warnings on Ingresses whose Secret is unusable
    assert all(v <= {"get", "list", "watch"} for v in ing.values())
    assert set(ing) == {"ingressclasses", "ingresses", "services", "secrets", "endpointslices"}


def test_image_entry_points_exist() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["ocsp-stapler"]
    chart_commands = {
        d["spec"]["template"]["spec"]["containers"][0]["args"][0]
        for d in render()
        if d["kind"] == "Deployment"
    }
    for command in {cmd[0], *chart_commands}:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / entry[0]), command, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pods_meet_pod_security_restricted(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    for d in render():
        if d["kind"] != "Deployment":
            continue
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": d["metadata"]["name"], "namespace": namespace},
            "spec": {**d["spec"]["template"]["spec"], "serviceAccountName": "default"},
        }
        manifest = tmp_path / f"{d['metadata']['name']}.json"
        manifest.write_text(json.dumps(pod))
        out = cluster.kubectl("create", "--dry-run=server", "-f", str(manifest), check=False)
        assert "created (server dry run)" in out, out
    # And the check is real: a root, privileged pod is refused in the same namespace.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]},
    }))  # fmt: skip
    with pytest.raises(RuntimeError, match="violates PodSecurity"):
        cluster.kubectl("create", "--dry-run=server", "-f", str(bad))


def _token_kubeconfig(cluster: ControlPlane, token: str, path: Path) -> Path:
    admin = json.loads(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": "sa"}}
        ],
        "current-context": "sa",
    }
    path.write_text(json.dumps(config))
    return path


async def test_install_and_prove_rbac_with_the_service_accounts_token(
    cluster: ControlPlane, api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    tmp_path: Path,
) -> None:  # fmt: skip
    release = f"r{namespace[-8:]}"
    other = f"{namespace}-other"
    await api.create(
        resource_path(api_version="v1", plural="namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
    )
    values = tmp_path / "values.yaml"
    values.write_text(
        f"operator:\n  watchNamespaces: [{namespace}]\n"
        f"ingress:\n  className: {release}-class\n  watchNamespaces: [{namespace}]\n"
    )
    # --take-ownership: the session's `crd` fixture may have applied the CRD already.
    helm("install", release, str(CHART), "--namespace", namespace, "-f", str(values), "--wait=false",
         "--take-ownership", kubeconfig=cluster.kubeconfig)  # fmt: skip
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/ocspstaples.ocsp-stapler.dev"
    )
    listed = helm(
        "get", "manifest", release, "--namespace", namespace, kubeconfig=cluster.kubeconfig
    ).stdout
    for doc in (d for d in yaml.safe_load_all(listed) if d):  # every object was accepted
        ns = doc["metadata"].get("namespace")
        args = ["get", doc["kind"].lower(), doc["metadata"]["name"]] + (["-n", ns] if ns else [])
        cluster.kubectl(*args)

    sa = f"system:serviceaccount:{namespace}:{release}-ocsp-stapler-operator"

    def can(verb: str, resource: str, ns: str) -> bool:
        return (
            cluster.kubectl(
                "auth", "can-i", verb, resource, "-n", ns, f"--as={sa}", check=False
            ).strip()
            == "yes"
        )

    assert can("patch", "secrets", namespace)
    assert can("create", "ocspstaples", namespace)
    assert not can("delete", "secrets", namespace)
    assert not can("create", "secrets", namespace)
    assert not can("get", "secrets", other)
    assert not can("list", "secrets", "kube-system")
    ingress_sa = f"system:serviceaccount:{namespace}:{release}-ocsp-stapler-ingress"
    assert (
        cluster.kubectl(
            "auth", "can-i", "patch", "secrets", "-n", namespace, f"--as={ingress_sa}", check=False
        ).strip()
        == "no"
    )
    assert (
        cluster.kubectl(
            "auth", "can-i", "list", "secrets", "-n", namespace, f"--as={ingress_sa}", check=False
        ).strip()
        == "yes"
    )

    # The operator's whole flow, authenticated as the chart's ServiceAccount (TokenRequest).
    token = (await api.create(
        resource_path(api_version="v1", plural="serviceaccounts", namespace=namespace,
                      name=f"{release}-ocsp-stapler-operator", subresource="token"),
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    ))["status"]["token"]  # fmt: skip
    kubeconfig = _token_kubeconfig(cluster, token, tmp_path / "sa.kubeconfig")
    async with ApiClient(load_credentials(str(kubeconfig))) as sa_api:
        await _prove_lease_access(sa_api, namespace, other)
    settings = OperatorSettings(
        namespaces=(namespace,), metrics_port=0, health_port=0, responder_allow_cidrs=LOOPBACK_CIDRS,
        leader_election=True, leader_election_namespace=namespace, leader_election_identity="sa",
    )  # fmt: skip
    op = await RunningOperator(
        settings=settings, credentials=load_credentials(str(kubeconfig))
    ).start()
    try:
        leaf = pki.leaf(ocsp_urls=[responder.url])
        await create_secret(api, namespace, "rbac", pki, leaf, annotations=ENABLED)
        await wait_for(lambda: staple_of(api, namespace, "rbac"), what="a staple written by the SA")
        obj = await wait_for(
            lambda: _staple_status(api, namespace, "rbac"), what="status written by the SA"
        )
        assert obj["status"]["certStatus"] == "good"
        assert await lease_holder(api, namespace, LEASE_NAME) == "sa"
        await op.settle()
    finally:
        await op.shutdown()

    before = await api.get(f"/api/v1/namespaces/{namespace}/secrets/rbac")
    helm("uninstall", release, "--namespace", namespace, kubeconfig=cluster.kubeconfig)
    after = await api.get(f"/api/v1/namespaces/{namespace}/secrets/rbac")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert base64.b64decode(after["data"]["tls.ocsp-staple"])
    await api.delete(resource_path(api_version="v1", plural="namespaces", name=other))


async def _prove_lease_access(sa: ApiClient, namespace: str, other: str) -> None:
    """Every Lease request the operator makes (the elector's get, create and update, the
    standby's list and watch by name), with the ServiceAccount's token: allowed on its Lease in
    the release namespace, refused on other Leases and in other namespaces."""

    def leases(ns: str, name: str | None = None) -> str:
        return resource_path(
            api_version="coordination.k8s.io/v1", plural="leases", namespace=ns, name=name
        )

    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE_NAME}, "spec": {}}  # fmt: skip
    by_name = {"fieldSelector": f"metadata.name={LEASE_NAME}"}
    await sa.create(leases(namespace), body)
    lease = await sa.get(leases(namespace, LEASE_NAME))
    await sa.replace(leases(namespace, LEASE_NAME), {**lease, "spec": {"leaseDurationSeconds": 15}})
    listed = await sa.get(leases(namespace), **by_name)
    assert [i["metadata"]["name"] for i in listed["items"]] == [LEASE_NAME]
    async with contextlib.aclosing(sa.watch(leases(namespace), params=by_name)) as events:
        first = await anext(events)
    assert (first["type"], first["object"]["spec"]) == ("ADDED", {"leaseDurationSeconds": 15})

    refused: list[Callable[[], Awaitable[Any]]] = [
        lambda: sa.delete(leases(namespace, LEASE_NAME)),
        lambda: sa.get(leases(namespace, "another")),
        lambda: sa.replace(leases(namespace, "another"), {**body, "metadata": {"name": "another"}}),
        lambda: sa.get(leases(namespace)),  # a list of every Lease, not by name
        lambda: sa.create(leases(other), body),
        lambda: sa.get(leases(other, LEASE_NAME)),
        lambda: sa.get(leases(other), **by_name),
        lambda: sa.replace(leases(other, LEASE_NAME), body),
    ]
    for i, request in enumerate(refused):
        with pytest.raises(ApiError) as error:
            await request()
        assert error.value.status == 403, (i, error.value)


async def _staple_status(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    path = resource_path(
        api_version="ocsp-stapler.dev/v1alpha1",
        plural="ocspstaples",
        namespace=namespace,
        name=name,
    )
    try:
        obj = await api.get(path)
    except Exception:
        return None
    return obj if obj.get("status", {}).get("certStatus") else None


def test_the_readme_configuration_reference_is_current() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "hack" / "values_reference.py"),
            "--check",
            str(REPO_ROOT / "README.md"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
