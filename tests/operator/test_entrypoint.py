"""`ocsp-stapler operator` as a real process: flags and environment, metrics, liveness,
JSON logs without key material, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

from devcluster.controlplane import ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from support.kube import wait_for
from support.operator_processes import CLI, http_get, spawn_operator
from support.staples import ENABLED, create_secret, staple_of


async def test_the_operator_process(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    cluster: ControlPlane, crd: None, tmp_path: Path,
) -> None:  # fmt: skip
    op = spawn_operator(cluster, namespace, tmp_path / "operator.log")
    proc, log, health_port, metrics_port = op.proc, op.log, op.health_port, op.metrics_port
    try:
        leaf = pki.leaf(ocsp_urls=[responder.url])
        await create_secret(api, namespace, "proc", pki, leaf, annotations=ENABLED)
        await wait_for(
            lambda: staple_of(api, namespace, "proc"), timeout=30, what="a staple from the process"
        )

        health = await wait_for(
            lambda: http_get(f"http://127.0.0.1:{health_port}/healthz"), what="liveness"
        )
        assert health[0] == 200
        metrics = await wait_for(
            lambda: http_get(f"http://127.0.0.1:{metrics_port}/metrics"), what="metrics"
        )
        assert "ocsp_stapler_managed_secrets 1.0" in metrics[1]
        assert 'ocsp_stapler_fetches_total{result="good"} 1.0' in metrics[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 0
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert lines
    for line in lines:
        json.loads(line)  # every line is a JSON object
    text = log.read_text()
    assert "PRIVATE KEY" not in text
    assert leaf.key_pem.decode().splitlines()[1] not in text


def test_bad_configuration_is_refused_at_start(cluster: ControlPlane) -> None:
    env = {**os.environ, "OCSP_STAPLER_CONCURRENCY": "0"}
    proc = subprocess.run(
        [CLI, "operator", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "OCSP_STAPLER_CONCURRENCY" in proc.stderr
    env = {**os.environ, "OCSP_STAPLER_RESPONDER_DENY_CIDRS": "10.0.0.0/99"}
    proc = subprocess.run(
        [CLI, "operator", "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "10.0.0.0/99" in proc.stderr
