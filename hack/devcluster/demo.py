"""`make run`: the whole product on one machine, checked by the clients users trust.

1. the local control plane (built from source on first use), the CRD and the IngressClass;
2. a demo CA with the real `openssl ocsp` responder;
3. the operator and the ingress from this checkout, as local processes, configured with the
   Helm chart's default values (rendered with `helm template`, so the demo runs what the chart
   deploys) with one exception: the demo responder listens on 127.0.0.1, which the operator
   refuses by default, so the demo allows loopback (`responder.allowCIDRs`); and a demo
   backend;
4. an annotated TLS Secret, an Ingress, the backend's Service and EndpointSlice (kubectl apply);
5. the staple, waited for, then `openssl s_client -status` and `curl --cert-status`;
6. a short report; everything stays up until Ctrl-C (or stops at once with --exit-when-ready).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster.controlplane import REPO_ROOT, ControlPlane, bin_dir, free_port
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

HOST = "demo.ocsp-stapler.test"
NAMESPACE = "demo"
CLI = str(Path(sys.executable).parent / "ocsp-stapler")
LOOPBACK_CIDRS = "127.0.0.0/8,::1/128"
"""Where the demo's responder listens; the operator refuses loopback unless allowed."""


def chart_env(component: str, pod_namespace: str = "default") -> dict[str, str]:
    """The environment the chart gives a component's container, with its default values;
    the downward API's fields as a pod ``demo-<component>`` in ``pod_namespace`` gets them."""
    pod_fields = {"metadata.namespace": pod_namespace, "metadata.name": f"demo-{component}"}
    out = subprocess.run(
        [
            str(bin_dir() / "helm"),
            "template",
            "demo",
            str(REPO_ROOT / "charts" / "ocsp-stapler"),
            "--kube-version",
            "1.35.4",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith(component):
            container = doc["spec"]["template"]["spec"]["containers"][0]
            return {
                e["name"]: str(e["value"])
                if "value" in e
                else pod_fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
                for e in container.get("env", [])
            }
    raise RuntimeError(f"no {component} Deployment in the chart")


def manifests(
    pki: TestPKI, leaf_pem: bytes, key_pem: bytes, backend_port: int
) -> list[dict[str, Any]]:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": "demo-tls",
                "namespace": NAMESPACE,
                "annotations": {"ocsp-stapler.dev/enabled": "true"},
            },
            "data": {"tls.crt": b64(leaf_pem), "tls.key": b64(key_pem)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "demo-backend", "namespace": NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "demo-backend-1",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": "demo-backend"},
            },
            # The API server refuses loopback IPs in IPv4 slices; an FQDN slice may name it.
            "addressType": "FQDN",
            "ports": [{"name": "http", "port": backend_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "demo", "namespace": NAMESPACE},
            "spec": {
                "ingressClassName": "ocsp-stapler",
                "tls": [{"hosts": [HOST], "secretName": "demo-tls"}],
                "rules": [
                    {
                        "host": HOST,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {
                                            "name": "demo-backend",
                                            "port": {"name": "http"},
                                        }
                                    },
                                }
                            ]
                        },
                    }
                ],
            },
        },
    ]


@dataclass
class Demo:
    workdir: Path
    cp: ControlPlane
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    responder: OpenSSLResponder | None = None
    https_port: int = 0

    def log(self, name: str) -> Path:
        return self.cp.log_dir / f"{name}.log"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self.responder is not None:
            self.responder.stop()

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = self.log(name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


def wait(what: str, probe: Any, demo: Demo, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        demo.check_alive()
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def run_demo(cp: ControlPlane, workdir: Path) -> tuple[Demo, bool, str]:
    """Bring everything up and check it; returns the demo, whether both clients agreed, and
    the report."""
    demo = Demo(workdir=workdir, cp=cp)
    step = lambda text: print(f"==> {text}", flush=True)  # noqa: E731
    step("CRD and IngressClass")
    cp.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/ocspstaples.ocsp-stapler.dev"
    )
    cp.kubectl(
        "apply",
        "-f",
        "-",
        input=b"apiVersion: networking.k8s.io/v1\nkind: IngressClass\n"
        b"metadata:\n  name: ocsp-stapler\nspec:\n  controller: ocsp-stapler.dev/ingress\n",
    )

    step("demo CA and `openssl ocsp` responder")
    pki = TestPKI(workdir / "pki", "ec")
    responder = OpenSSLResponder(
        pki, signer="delegate", log=cp.log_dir / "ocsp-responder.log"
    ).start()
    leaf = pki.leaf(HOST, ocsp_urls=[responder.url])

    step("demo backend, operator and ingress (the chart's default configuration)")
    site = workdir / "site"
    site.mkdir(exist_ok=True)
    (site / "index.html").write_text(
        "hello from the demo backend, through ocsp-stapler's ingress\n"
    )
    backend_port = free_port()
    demo.spawn(
        "backend",
        [
            sys.executable,
            "-m",
            "http.server",
            str(backend_port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(site),
        ],
    )
    metrics_port, health_port = free_port(), free_port()
    operator_env = {
        **chart_env("operator"),
        # The demo responder is on loopback, refused by default: what
        # `--set operator.responder.allowCIDRs={127.0.0.0/8}` would give.
        "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS": LOOPBACK_CIDRS,
        "OCSP_STAPLER_LOG_FORMAT": "plain",
        "OCSP_STAPLER_METRICS_PORT": str(metrics_port),
        "OCSP_STAPLER_HEALTH_PORT": str(health_port),
    }
    demo.spawn(
        "operator",
        [CLI, "operator", "--all-namespaces", "--kubeconfig", str(cp.kubeconfig)],
        operator_env,
    )
    demo.https_port, http_port, ingress_health = free_port(), free_port(), free_port()
    ingress_env = {
        **chart_env("ingress"),
        "OCSP_STAPLER_LOG_FORMAT": "plain",
        "OCSP_STAPLER_ADVERTISED_HTTPS_PORT": str(demo.https_port),
    }
    demo.spawn(
        "ingress",
        [
            CLI,
            "ingress",
            "--kubeconfig",
            str(cp.kubeconfig),
            "--bind-address",
            "127.0.0.1",
            "--https-port",
            str(demo.https_port),
            "--http-port",
            str(http_port),
            "--health-port",
            str(ingress_health),
            "--workers",
            "2",
        ],
        ingress_env,
    )

    step(f"kubectl apply: Secret, Service, EndpointSlice, Ingress for https://{HOST}")
    docs = manifests(pki, pki.chain_pem(leaf), leaf.key_pem, backend_port)
    cp.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs).encode())

    step("waiting for the staple")

    def staple() -> bytes | None:
        out = cp.kubectl("get", "secret", "demo-tls", "-n", NAMESPACE, "-o", "json")
        data = json.loads(out).get("data", {})
        return base64.b64decode(data["tls.ocsp-staple"]) if "tls.ocsp-staple" in data else None

    der = wait("the staple in the Secret", staple, demo)

    step("checking with openssl s_client -status and curl --cert-status")
    root = str(pki.path("root"))

    def s_client() -> str | None:
        proc = subprocess.run(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{demo.https_port}",
                "-servername",
                HOST,
                "-status",
                "-CAfile",
                root,
            ],
            input=b"",
            capture_output=True,
            timeout=30,
            check=False,
        )
        text = proc.stdout.decode(errors="replace")
        return text if "OCSP Response Status: successful" in text else None

    s_out = wait("a stapled handshake", s_client, demo)
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "--cert-status",
            "--cacert",
            root,
            "--resolve",
            f"{HOST}:{demo.https_port}:127.0.0.1",
            f"https://{HOST}:{demo.https_port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    status = next(
        (ln.split(":", 1)[1].strip() for ln in s_out.splitlines() if "Cert Status:" in ln), "?"
    )
    this_update = next(
        (ln.split(":", 1)[1].strip() for ln in s_out.splitlines() if "This Update:" in ln), "?"
    )
    next_update = next(
        (ln.split(":", 1)[1].strip() for ln in s_out.splitlines() if "Next Update:" in ln), "?"
    )
    staples = wait(
        "the OCSPStaple status",
        lambda: (out := cp.kubectl("get", "staples", "-A")) and " good " in out and out,
        demo,
    )
    curl_ok = curl.returncode == 0 and "hello from the demo backend" in curl.stdout
    ok = status == "good" and curl_ok
    kubectl = bin_dir() / "kubectl"
    port, url = demo.https_port, f"https://{HOST}:{demo.https_port}/"
    report = "\n".join(
        [
            "",
            "ocsp-stapler demo",
            "=================",
            f"staple in Secret {NAMESPACE}/demo-tls: {len(der)} bytes (data key tls.ocsp-staple)",
            f"openssl s_client -status: OCSP Response Status: successful, Cert Status: {status}",
            f"  This Update: {this_update}",
            f"  Next Update: {next_update}",
            "curl --cert-status: "
            + ("ok, the staple verified" if curl_ok else "FAILED: " + curl.stderr.strip()),
            "",
            "kubectl get staples -A",
            staples.rstrip(),
            "",
            "try:",
            f"  curl --cert-status --cacert {root} --resolve {HOST}:{port}:127.0.0.1 {url}",
            f"  openssl s_client -connect 127.0.0.1:{port} -servername {HOST} -status"
            f" -CAfile {root}",
            f"  {kubectl} --kubeconfig {cp.kubeconfig} describe secret demo-tls -n {NAMESPACE}",
            f"logs: {cp.log_dir}/",
            "  operator.log, ingress.log, ocsp-responder.log, backend.log, kube-apiserver.log",
            f"metrics: http://127.0.0.1:{metrics_port}/metrics (operator)",
            f"         http://127.0.0.1:{ingress_health}/metrics (ingress)",
        ]
    )
    demo.responder = responder
    return demo, ok, report


def _field(s_client_output: str, name: str) -> str:
    for line in s_client_output.splitlines():
        if f"{name}:" in line:
            return line.split(":", 1)[1].strip()
    return "?"
