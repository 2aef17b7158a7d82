"""Debian's real nginx on loopback, configured the way the consumer tests need."""

from __future__ import annotations

import shutil
from pathlib import Path

from devcluster.pki import Issued, TestPKI
from devcluster.responder import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

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
        {stapling}
        location / {{ return 200 "served by nginx\\n"; }}
    }}
}}
"""


def write_conf(directory: Path, *, port: int, host: str, stapling: str) -> Path:
    """nginx.conf in ``directory`` (which holds chain.pem and key.pem); its path."""
    path = directory / "nginx.conf"
    path.write_text(CONF.format(dir=directory, port=port, host=host, stapling=stapling))
    return path


def included_site(directory: Path, pki: TestPKI, leaf: Issued, host: str) -> int:
    """A site in ``directory`` serving ``leaf`` whose stapling comes from the include the
    sync sidecar writes (``stapling.conf``); its port."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "chain.pem").write_bytes(pki.chain_pem(leaf))
    (directory / "key.pem").write_bytes(leaf.key_pem)
    port = free_port()
    write_conf(directory, port=port, host=host, stapling=f"include {directory}/stapling.conf;")
    return port


def command(directory: Path, *extra: str) -> list[str]:
    return [NGINX, *extra, "-p", str(directory), "-c", str(directory / "nginx.conf")]
