"""`ocsp-stapler operator` as a real process: flags and environment, metrics, liveness,
JSON logs without key material, and a clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from devcluster.controlplane import ControlPlane
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder, free_port

from ocsp_stapler.k8s.client import ApiClient
from support.kube import wait_for
from support.responders import LOOPBACK_CIDRS
from support.staples import ENABLED, create_secret, staple_of

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


async def _get(url: str) -> tuple[int, str] | None:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status, await r.text()
    except aiohttp.ClientError:
        return None


async def test_the_operator_process(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    cluster: ControlPlane, crd: None, tmp_path: Path,
) -> None:  # fmt: skip
    metrics_port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        "OCSP_STAPLER_METRICS_PORT": str(metrics_port),
        "OCSP_STAPLER_HEALTH_PORT": str(health_port),
        "OCSP_STAPLER_LOG_FORMAT": "json",
        "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS": ",".join(LOOPBACK_CIDRS),
    }
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "operator", "--namespace", namespace, "--kubeconfig", str(cluster.kubeconfig)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        leaf = pki.leaf(ocsp_urls=[responder.url])
        await create_secret(api, namespace, "proc", pki, leaf, annotations=ENABLED)
        await wait_for(
            lambda: staple_of(api, namespace, "proc"), timeout=30, what="a staple from the process"
        )

        health = await wait_for(
            lambda: _get(f"http://127.0.0.1:{health_port}/healthz"), what="liveness"
        )
        assert health[0] == 200
        metrics = await wait_for(
            lambda: _get(f"http://127.0.0.1:{metrics_port}/metrics"), what="metrics"
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
