"""Another real consumer of the operator's staple: nginx from Debian, with `ssl_stapling_file`
pointing at the staple read out of the Secret, checked by `curl --cert-status`."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder, free_port

from ocsp_stapler.k8s.client import ApiClient
from support.kube import wait_for
from support.operators import StartOperator
from support.staples import stapled_secret

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HOST = "www.example.test"  # the name in stapled_secret's certificate

CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {host};
        ssl_certificate {dir}/chain.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_stapling on;
        ssl_stapling_file {dir}/tls.ocsp-staple;
        location / {{ return 200 "served by nginx\\n"; }}
    }}
}}
"""


async def test_nginx_serves_the_operators_staple(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, tmp_path: Path,
) -> None:  # fmt: skip
    await start_operator()
    leaf, der = await stapled_secret(api, namespace, "for-nginx", pki, responder.url)
    secret = await api.get(f"/api/v1/namespaces/{namespace}/secrets/for-nginx")
    assert "tls.ocsp-staple" in secret["data"]
    # What a Secret volume mount would give nginx: one file per key.
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "tls.ocsp-staple").write_bytes(der)
    port = free_port()
    (tmp_path / "nginx.conf").write_text(CONF.format(dir=tmp_path, port=port, host=HOST))
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        async def curl() -> subprocess.CompletedProcess[str] | None:
            got = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "--cert-status", "--cacert", str(pki.path("root")),
                 "--resolve", f"{HOST}:{port}:127.0.0.1", f"https://{HOST}:{port}/"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            return got if got.returncode == 0 else None

        got = await wait_for(curl, what="nginx to serve with the staple")
        assert got.stdout == "served by nginx\n"
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    log = (tmp_path / "error.log").read_text()
    assert "ssl_stapling" not in log or "ignored" not in log, log
