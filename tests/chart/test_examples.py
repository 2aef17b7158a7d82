"""The example manifests for nginx and HAProxy with the sync sidecar (examples/): valid for
the real kube-apiserver under Pod Security "restricted", and every sidecar's arguments are
ones ``ocsp-stapler sync`` accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from devcluster.controlplane import REPO_ROOT, ControlPlane

from ocsp_stapler.cli import main

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*-sidecar.yaml"))


def _deployment(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d["kind"] == "Deployment")


def test_there_are_examples_for_nginx_and_haproxy() -> None:
    assert [p.name for p in EXAMPLES] == ["haproxy-sidecar.yaml", "nginx-sidecar.yaml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_sidecar_arguments_are_accepted(path: Path) -> None:
    spec = _deployment(path)["spec"]["template"]["spec"]
    sidecars = [c for c in spec["initContainers"] if c.get("restartPolicy") == "Always"]
    assert len(sidecars) == 1
    args = sidecars[0]["args"]
    assert args[0] == "sync"
    command = main.commands["sync"]
    with command.make_context("sync", list(args[1:])) as ctx:  # raises on a bad option
        assert ctx.params["out"] is not None
    with pytest.raises(click.UsageError):
        command.make_context("sync", ["--no-such-option"])
    probe = sidecars[0]["startupProbe"]["httpGet"]
    assert (probe["path"], f"--health-port={probe['port']}") == ("/readyz", args[-1])


def test_the_examples_are_valid_and_restricted(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    for path in EXAMPLES:
        out = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(path))
        assert out.count("created (server dry run)") == 2, out
        # A Deployment's pods are only warned about at create: a Pod is admitted or refused.
        spec = _deployment(path)["spec"]["template"]["spec"]
        for name, pod_spec in (("ok", spec), ("root", _as_root(spec))):
            pod = tmp_path / f"{path.stem}-{name}.json"
            pod.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod",
                                       "metadata": {"name": f"{path.stem}-{name}"},
                                       "spec": pod_spec}))  # fmt: skip
            got = cluster.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(pod),
                                  check=False)  # fmt: skip
            assert ("created (server dry run)" in got) == (name == "ok"), (path.name, name, got)


def _as_root(spec: dict[str, Any]) -> dict[str, Any]:
    """The same pod running as root: the restricted check must refuse it."""
    security = {**spec["securityContext"], "runAsUser": 0}
    security.pop("runAsNonRoot")
    return {**spec, "securityContext": security}
