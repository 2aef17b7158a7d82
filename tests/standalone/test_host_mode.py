"""``ocsp-stapler staple`` as a real process for hosts outside Kubernetes, against the real
``openssl ocsp`` responder (and a scripted one for the faults it cannot produce): the staple
file is the only state, so a restart with a fresh file asks nothing; an expired file is
removed, never kept, when the responder is down; a revocation follows ``revokedAction``; and
a running HAProxy gets the staple pushed."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from aiohttp import web
from devcluster.pki import Issued, TestPKI
from devcluster.responder import OpenSSLResponder

from support.haproxy_servers import running
from support.kube import wait_for
from support.responders import LOOPBACK_CIDRS, ScriptedServer
from support.sidecars import CLI
from support.staples import openssl_verifies
from support.status_requests import utc

HOST = "host-mode.example.test"
ENV = {**os.environ, "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS": ",".join(LOOPBACK_CIDRS)}


def _chain(tmp_path: Path, pki: TestPKI, leaf: Issued, name: str = "site.pem") -> Path:
    chain = tmp_path / name
    chain.write_bytes(pki.chain_pem(leaf) + leaf.key_pem)
    return chain


def _once(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "staple", "--once", *args], capture_output=True, text=True,
                          timeout=120, env={**ENV, **(env or {})}, check=False)  # fmt: skip


def test_once_staples_from_the_real_responder_and_a_restart_asks_nothing(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    leaf = pki.leaf(HOST, ocsp_urls=[responder.url])
    chain = _chain(tmp_path, pki, leaf)
    done = _once(str(chain))
    assert done.returncode == 0, done.stderr
    staple_file = tmp_path / "site.pem.ocsp"  # HAProxy's name for it, beside the chain
    assert openssl_verifies(pki, leaf, staple_file.read_bytes(), tmp_path) == "good"
    asked = responder.request_count()
    first = staple_file.read_bytes()
    again = _once(str(chain))
    assert again.returncode == 0, again.stderr
    assert responder.request_count() == asked  # the file is fresh: no request
    assert staple_file.read_bytes() == first


async def test_an_expired_file_is_removed_when_the_responder_is_down(
    pki: TestPKI, scripted: ScriptedServer, tmp_path: Path
) -> None:
    async def down(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="down for maintenance")

    scripted.handler = down
    leaf = pki.leaf(HOST, ocsp_urls=[scripted.url])
    chain = _chain(tmp_path, pki, leaf)
    out = tmp_path / "staples" / "site.der"
    out.parent.mkdir()
    out.write_bytes(pki.response(leaf, this_update=utc(days=-2), next_update=utc(minutes=-1)))
    done = await asyncio.to_thread(_once, str(chain), "--out", str(out))
    assert done.returncode == 2
    assert not out.exists()
    assert "503" in done.stderr
    assert scripted.requests  # it did try


async def test_a_file_past_its_refresh_point_is_kept_while_the_responder_repeats_it(
    pki: TestPKI, scripted: ScriptedServer, tmp_path: Path
) -> None:
    """A CDN hands back the very response held: kept (still valid), not replaced, not lost."""
    leaf = pki.leaf(HOST, ocsp_urls=[scripted.url])
    held = pki.response(leaf, this_update=utc(days=-6), next_update=utc(days=1))

    async def cdn(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=held, content_type="application/ocsp-response")

    scripted.handler = cdn
    chain = _chain(tmp_path, pki, leaf)
    out = tmp_path / "site.pem.ocsp"
    out.write_bytes(held)
    done = await asyncio.to_thread(_once, str(chain))
    assert done.returncode == 0, done.stderr
    assert len(scripted.requests) == 1  # due (past the midpoint): asked once, and only once
    assert out.read_bytes() == held


def test_a_revocation_is_stapled_or_removed_as_revoked_action_says(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    leaf = pki.leaf(HOST, ocsp_urls=[responder.url])
    pki.set_status(leaf, "R")
    chain = _chain(tmp_path, pki, leaf)
    stapled = _once(str(chain), "--out-dir", str(tmp_path / "a"))
    assert stapled.returncode == 0, stapled.stderr
    assert openssl_verifies(pki, leaf, (tmp_path / "a" / "site.pem.ocsp").read_bytes(),
                            tmp_path) == "revoked"  # fmt: skip
    assert "REVOKED" in stapled.stderr
    removed = _once(str(chain), "--out-dir", str(tmp_path / "b"),
                    env={"OCSP_STAPLER_REVOKED_ACTION": "remove"})  # fmt: skip
    assert removed.returncode == 2
    assert not (tmp_path / "b" / "site.pem.ocsp").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    one, two = tmp_path / "a.pem", tmp_path / "b.pem"
    done = _once(str(one), str(two), "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "--out names one staple file" in done.stderr


async def test_a_running_haproxy_gets_the_staple_pushed(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    leaf = pki.leaf(HOST, ocsp_urls=[responder.url])
    with running(pki, leaf, HOST) as haproxy:
        await haproxy.answering()
        crt = haproxy.dir / "site.pem"
        process = subprocess.Popen([CLI, "staple", str(crt), "--haproxy-socket",
                                    str(haproxy.socket)], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:

            async def stapled() -> bool | None:
                return (await haproxy.this_update()) is not None or None

            await wait_for(stapled, timeout=20, what="HAProxy to staple")
            assert haproxy.ocsp_file.exists()
            assert openssl_verifies(pki, leaf, haproxy.ocsp_file.read_bytes(), tmp_path) == "good"
        finally:
            process.terminate()
            process.wait(timeout=10)
