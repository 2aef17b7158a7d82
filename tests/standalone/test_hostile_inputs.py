"""What users and CAs can put in front of the standalone staplers: files that are not files,
a mistyped ``--out``, a responder that says ``unknown``, a consumer failing until the staple
expired, names nginx cannot take. Each ends in a verdict for that one certificate."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web
from devcluster.pki import TestPKI

from ocsp_stapler.consumers.delivery import Delivery
from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.consumers.nginx import stapling_include
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.standalone.files import read_small_file
from ocsp_stapler.standalone.host import Certificate, HostStapler
from support.clocks import FakeClock
from support.responders import LOOPBACK_CIDRS, ScriptedServer
from support.sidecars import CLI
from support.status_requests import utc

HOST = "hostile.example.test"
SETTINGS = OperatorSettings(responder_allow_cidrs=LOOPBACK_CIDRS)


def test_fifos_directories_and_huge_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a plain open() would wait for one forever
    with pytest.raises(errors.ChainInvalid, match="not a regular file"):
        read_small_file(fifo)
    with pytest.raises(errors.ChainInvalid, match="not a regular file"):
        read_small_file(tmp_path)
    huge = tmp_path / "huge"
    huge.write_bytes(b"\0" * 2048)
    with pytest.raises(errors.ChainInvalid, match="larger than 1024 bytes"):
        read_small_file(huge, limit=1024)
    assert read_small_file(tmp_path / "absent") is None
    odd = tmp_path / os.fsdecode(b"\xff\x1b[31mname")
    odd.write_bytes(b"x")
    assert read_small_file(odd) == b"x"
    with pytest.raises(errors.ChainInvalid, match="Not a directory") as raised:
        read_small_file(Path(str(odd) + "/below"))
    assert "\x1b" not in str(raised.value)  # the name is shown printable, not as a terminal code
    assert "?" in str(raised.value)


def test_a_path_nginx_cannot_take_is_a_consumer_error() -> None:
    for name in (os.fsdecode(b"/run/\xff.der"), "/run/a b.der", "/run/a;b.der", "/run/a\n.der"):
        with pytest.raises(ConsumerError, match="cannot take unquoted"):
            stapling_include(Path(name))


def _run(*args: str) -> tuple[int, str]:
    import subprocess  # noqa: PLC0415

    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OCSP_STAPLER_RESPONDER_ALLOW_CIDRS":
                               ",".join(LOOPBACK_CIDRS)}, check=False)  # fmt: skip
    return done.returncode, done.stderr


def test_an_out_that_holds_something_else_is_left_alone(pki: TestPKI, tmp_path: Path) -> None:
    leaf = pki.leaf(HOST, ocsp_urls=["http://127.0.0.1:9/"])
    chain = tmp_path / "site.pem"
    chain.write_bytes(pki.chain_pem(leaf) + leaf.key_pem)
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    code, said = _run("staple", "--once", str(chain), "--out", str(config))
    assert code == 2
    assert "something other than an OCSP response" in said
    assert config.read_text() == "global\n"
    code, said = _run("staple", "--once", str(chain), "--out", str(chain))
    assert code == 2
    assert chain.read_bytes().endswith(leaf.key_pem)
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "tls.crt").write_bytes(pki.chain_pem(leaf))
    code, said = _run("sync", "--once", "--secret-dir", str(volume), "--out", str(chain))
    assert code == 2
    assert "something other than an OCSP response" in said
    assert chain.read_bytes().endswith(leaf.key_pem)


async def test_unknown_from_the_responder_is_retried_later_and_others_go_on(
    pki: TestPKI, scripted: ScriptedServer, tmp_path: Path
) -> None:
    """A freshly issued certificate the responder does not know yet: refused, asked again
    after a backoff (one request now), and the next chain in the list is still stapled."""
    fresh = pki.leaf("fresh.example.test", ocsp_urls=[f"{scripted.url}/fresh"])
    known = pki.leaf("known.example.test", ocsp_urls=[f"{scripted.url}/known"])

    async def answer(request: web.Request) -> web.StreamResponse:
        leaf, status = (fresh, "unknown") if request.path.startswith("/fresh") else (known, "good")
        der = pki.response(leaf, this_update=utc(minutes=-1), next_update=utc(days=1),
                           status=status)  # fmt: skip
        return web.Response(body=der, content_type="application/ocsp-response")

    scripted.handler = answer
    certificates = []
    for leaf, name in ((fresh, "fresh.pem"), (known, "known.pem")):
        (tmp_path / name).write_bytes(pki.chain_pem(leaf))
        certificates.append(Certificate(chain_file=tmp_path / name,
                                        delivery=Delivery(staple_file=tmp_path / f"{name}.ocsp")))  # fmt: skip
    clock = FakeClock()
    async with HttpFetcher(SETTINGS.fetch_settings()) as fetch:
        stapler = HostStapler(certificates, fetch=fetch, settings=SETTINGS, clock=clock)
        assert not await stapler.run_once()
        wake = await stapler.process(certificates[0])
    fresh_asks = [p for _m, p in scripted.requests if p.startswith("/fresh")]
    assert len(fresh_asks) == 1
    assert wake is not None
    assert wake > clock.now + datetime.timedelta(seconds=30)
    assert not (tmp_path / "fresh.pem.ocsp").exists()
    assert (tmp_path / "known.pem.ocsp").exists()


RECORD = (
    "import os, sys\n"
    "f = os.environ['OCSP_STAPLER_STAPLE_FILE']\n"
    "open(sys.argv[1], 'a').write((open(f, 'rb').read().hex() if f else '-') + '\\n')\n"
    "sys.exit(1)\n"
)


async def test_a_staple_that_expired_while_a_consumer_failed_is_not_handed_over_again(
    pki: TestPKI, scripted: ScriptedServer, tmp_path: Path
) -> None:
    leaf = pki.leaf(HOST, ocsp_urls=[scripted.url])
    clock = FakeClock()
    der = pki.response(leaf, this_update=clock.now - datetime.timedelta(minutes=1),
                       next_update=clock.now + datetime.timedelta(minutes=10))  # fmt: skip

    async def answer(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=der, content_type="application/ocsp-response")

    scripted.handler = answer
    (tmp_path / "site.pem").write_bytes(pki.chain_pem(leaf))
    calls = tmp_path / "calls"
    cert = Certificate(
        chain_file=tmp_path / "site.pem",
        delivery=Delivery(staple_file=tmp_path / "site.pem.ocsp",
                          command=(sys.executable, "-c", RECORD, str(calls))),
    )  # fmt: skip
    async with HttpFetcher(SETTINGS.fetch_settings()) as fetch:
        stapler = HostStapler([cert], fetch=fetch, settings=SETTINGS, clock=clock)
        await stapler.process(cert)  # written; the command fails: hand over again later
        assert cert.redeliver_at is not None
        clock.advance(datetime.timedelta(minutes=11))  # the retry is due, the staple expired
        await asyncio.wait_for(stapler.process(cert), 30)
    handed = calls.read_text().split()
    assert handed[0] == der.hex()
    assert all(h == "-" for h in handed[1:])  # never the expired staple again
    assert not (tmp_path / "site.pem.ocsp").exists()
