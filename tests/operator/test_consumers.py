"""Another real consumer of the operator's staple: nginx from Debian, with `ssl_stapling_file`
pointing at the staple read out of the Secret, checked by `curl --cert-status`."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from pathlib import Path

from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder, free_port

from ocsp_stapler.k8s.client import ApiClient
from support import nginx_servers
from support.kube import wait_for
from support.operators import StartOperator
from support.staples import stapled_secret
from support.status_requests import stapled_this_update

HOST = "www.example.test"  # the name in stapled_secret's certificate


def _conf(directory: Path, port: int) -> None:
    stapling = f"ssl_stapling on; ssl_stapling_file {directory}/tls.ocsp-staple;"
    nginx_servers.write_conf(directory, port=port, host=HOST, stapling=stapling)


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
    _conf(tmp_path, port)
    nginx = subprocess.Popen(nginx_servers.command(tmp_path),
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


# What nginx does with a staple file on bad days, measured (the sync sidecar, #15, is built
# on these facts): it staples a file-loaded response whatever its nextUpdate, and refuses to
# start (or to reload) with an empty or missing file.


def _nginx_with_staple(pki: TestPKI, tmp_path: Path, staple: bytes | None) -> tuple[int, bool]:
    """(port, whether the configuration test passed) for nginx started with this file."""
    leaf = pki.leaf(HOST)
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    if staple is not None:
        (tmp_path / "tls.ocsp-staple").write_bytes(staple)
    port = free_port()
    _conf(tmp_path, port)
    tested = subprocess.run(nginx_servers.command(tmp_path, "-t"),
                            capture_output=True, check=False)  # fmt: skip
    return port, tested.returncode == 0


async def _stapled(port: int) -> bool:
    return await stapled_this_update(port, HOST) is not None


async def test_nginx_staples_a_file_loaded_response_past_its_next_update(
    pki: TestPKI, tmp_path: Path
) -> None:
    """Measured on Debian's nginx: a staple file is never judged again after it is read, so
    a consumer fed by a file serves an expired staple until someone reloads it."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    der = pki.response(pki.leaf(HOST), this_update=now - datetime.timedelta(minutes=1),
                       next_update=now + datetime.timedelta(seconds=8))  # fmt: skip
    port, valid = _nginx_with_staple(pki, tmp_path, der)
    assert valid
    nginx = subprocess.Popen(nginx_servers.command(tmp_path),
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        async def serving() -> bool | None:
            try:
                return await _stapled(port)
            except ConnectionError:
                return None

        assert await wait_for(serving, what="nginx to answer") is True

        async def expired() -> bool | None:
            past = datetime.datetime.now(datetime.UTC) > now + datetime.timedelta(seconds=9)
            return True if past else None

        await wait_for(expired, timeout=30, what="the staple's nextUpdate to pass")
        assert await _stapled(port)  # still stapled, expired
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def test_nginx_refuses_an_empty_or_missing_staple_file(pki: TestPKI, tmp_path: Path) -> None:
    """So "no valid staple" cannot be said to nginx with an empty file: its configuration
    test fails, a reload is refused and the old staple stays; it takes a configuration
    without ssl_stapling_file."""
    for case, content in (("empty", b""), ("missing", None)):
        directory = tmp_path / case
        directory.mkdir()
        _port, valid = _nginx_with_staple(pki, directory, content)
        assert not valid, case
