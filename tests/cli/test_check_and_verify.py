"""`ocsp-stapler check` and `verify`, run as the installed console script against real peers."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

CLI = str(Path(sys.executable).parent / "ocsp-stapler")


LOOPBACK = ("--allow-cidr", "127.0.0.0/8")  # the test responder's address; refused by default


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("cli-pki")), "ec")


@pytest.fixture(scope="module")
def responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r


def chain_file(pki: TestPKI, tmp_path: Path, **leaf_kwargs: object) -> tuple[Path, int]:
    leaf = pki.leaf(**leaf_kwargs)  # type: ignore[arg-type]
    path = tmp_path / "chain.pem"
    path.write_bytes(pki.chain_pem(leaf))
    return path, leaf.cert.serial_number


def test_good(pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path) -> None:
    chain, serial = chain_file(pki, tmp_path, ocsp_urls=[responder.url])
    out = tmp_path / "staple.der"
    result = run("check", *LOOPBACK, str(chain), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "status:      good" in result.stdout
    assert f"responder:   {responder.url}" in result.stdout
    assert "signed by:   a delegated responder" in result.stdout
    assert "refresh due:" in result.stdout
    assert f"serial:      {serial:X}" in result.stdout
    # The DER written is what openssl accepts for this certificate.
    verified = subprocess.run(
        ["openssl", "ocsp", "-respin", str(out), "-CAfile", str(pki.path("root")),
         "-verify_other", str(pki.path("intermediate")), "-issuer", str(pki.path("intermediate")),
         "-cert", str(chain)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Response verify OK" in verified.stderr + verified.stdout
    assert f"{chain}: good" in verified.stdout


def test_revoked_json(pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path) -> None:
    leaf = pki.leaf(ocsp_urls=[responder.url])
    (tmp_path / "c.pem").write_bytes(pki.chain_pem(leaf))
    pki.set_status(leaf, "R", reason="cessationOfOperation")
    result = run("check", *LOOPBACK, str(tmp_path / "c.pem"), "--json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "revoked"
    assert doc["revocation_reason"] == "cessationOfOperation"
    assert doc["revocation_time"].endswith("Z")
    assert doc["signer"] == "delegated"
    assert doc["responder_url"] == responder.url
    assert doc["error"] is None
    for key in ("this_update", "next_update", "produced_at", "refresh_at"):
        assert datetime.datetime.fromisoformat(doc[key])


def test_unknown(pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path) -> None:
    chain, _ = chain_file(pki, tmp_path, ocsp_urls=[responder.url], register=False)
    result = run("check", *LOOPBACK, str(chain), "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "unknown"


def test_url_override_and_separate_issuer(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    leaf = pki.leaf(ocsp_urls=[])
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    result = run(
        "check",
        *LOOPBACK,
        str(tmp_path / "leaf.pem"),
        "--issuer",
        str(pki.path("intermediate")),
        "--url",
        responder.url,
    )
    assert result.returncode == 0, result.stderr


def test_failures_exit_2_with_one_line_on_stderr(pki: TestPKI, tmp_path: Path) -> None:
    chain, _ = chain_file(pki, tmp_path, ocsp_urls=[])
    result = run("check", str(chain), "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["reason"] == "NoResponder"
    assert doc["status"] is None
    assert result.stderr.count("\n") == 1
    assert "NoResponder" in result.stderr

    refused = run("check", str(chain), "--url", "http://169.254.169.254/")
    assert refused.returncode == 2
    assert "DestinationRefused" in refused.stderr

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    result = run("check", str(garbage))
    assert (result.returncode, "ChainInvalid" in result.stderr) == (2, True)


def test_loopback_needs_an_allow_range_inside_it(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    chain, _ = chain_file(pki, tmp_path, ocsp_urls=[responder.url])
    for allow in ((), ("--allow-cidr", "0.0.0.0/0"), ("--allow-cidr", "::/0")):
        refused = run("check", *allow, str(chain), "--json")
        assert refused.returncode == 2, allow
        assert json.loads(refused.stdout)["reason"] == "DestinationRefused"
        assert "127.0.0.0/8" in refused.stderr
    assert run("check", "--allow-cidr", "127.0.0.1/32", str(chain)).returncode == 0


def test_verify_offline_and_as_of(
    pki: TestPKI, responder: OpenSSLResponder, tmp_path: Path
) -> None:
    chain, _ = chain_file(pki, tmp_path, ocsp_urls=[responder.url])
    der = tmp_path / "s.der"
    assert run("check", *LOOPBACK, str(chain), "--out", str(der)).returncode == 0

    ok = run("verify", "--response", str(der), "--cert", str(chain), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "good"

    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    expired = run("verify", "--response", str(der), "--cert", str(chain), "--at", later)
    assert expired.returncode == 2
    assert "Expired" in expired.stderr

    earlier = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    assert (
        "NotYetValid"
        in run("verify", "--response", str(der), "--cert", str(chain), "--at", earlier).stderr
    )

    # Another certificate's staple does not verify for this one.
    other, _ = chain_file(pki, tmp_path / "..", ocsp_urls=[responder.url])
    wrong = run("verify", "--response", str(der), "--cert", str(other))
    assert wrong.returncode == 2
    assert "CertIDMismatch" in wrong.stderr

    # Leaf alone: the issuer must be given.
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(
        chain.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    assert "pass --issuer" in run("verify", "--response", str(der), "--cert", str(leaf_only)).stderr
    with_issuer = run(
        "verify",
        "--response",
        str(der),
        "--cert",
        str(leaf_only),
        "--issuer",
        str(pki.path("intermediate")),
    )
    assert with_issuer.returncode == 0
