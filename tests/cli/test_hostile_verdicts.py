"""`ocsp-stapler verify` and `check` on responses a CA (or an attacker) can produce: every one
ends in its exit code (0 good, 1 revoked, 3 unknown, 2 refused) and one line naming the
reason on stderr, never a traceback; a revocation is reported whatever its reason code."""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.x509.oid import ExtendedKeyUsageOID
from devcluster.pki import Issued, TestPKI, issue, name, new_key

from support.ocsp_der import Answer, ResponseSpec
from support.responders import ScriptedServer

CLI = str(Path(sys.executable).parent / "ocsp-stapler")
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("hostile-cli-pki")), "ec")


def _response(
    pki: TestPKI, leaf: Issued, *, signer: Issued | None = None, **answer: object
) -> bytes:
    signer = signer or pki.delegate
    fields: dict[str, object] = {
        "serial": leaf.cert.serial_number,
        "issuer": pki.intermediate.cert,
        "this_update": NOW - datetime.timedelta(hours=1),
        "next_update": NOW + datetime.timedelta(days=1),
        **answer,
    }
    spec = ResponseSpec(
        answers=[Answer(**fields)],  # type: ignore[arg-type]
        key=signer.key,  # type: ignore[arg-type]
        responder=signer.cert,
        certs=(signer.cert,),
        produced_at=NOW,
    )
    return spec.der(NOW)


def ca_delegate(pki: TestPKI) -> Issued:
    """A sub-CA of the issuer that also carries OCSPSigning: the 2020 incident's certificates."""
    return issue(
        subject=name("Sub CA with OCSPSigning"),
        key=new_key("ec"),
        issuer=pki.intermediate,
        ca=True,
        eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
    )


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


CASES = [
    # (case, answer fields, exit code, what stdout or stderr must say)
    ("good in a SHA-224 CertID", {"hash_name": "sha224"}, 0, "status:      good"),
    ("an MD5 CertID names nobody", {"hash_name": "md5"}, 2, "CertIDMismatch"),
    ("an unknown CertID hash", {"hash_name": "unknown"}, 2, "CertIDMismatch"),
    ("revoked, reason 1", {"status": "revoked", "reason": 1}, 1, "(keyCompromise)"),
    ("revoked, reason 7 (unused)", {"status": "revoked", "reason": 7}, 1, "(reason code 7)"),
    ("revoked, reason 11", {"status": "revoked", "reason": 11}, 1, "(reason code 11)"),
    ("revoked, no reason", {"status": "revoked"}, 1, "status:      revoked"),
    ("unknown", {"status": "unknown"}, 3, "status:      unknown"),
    (
        "nextUpdate before thisUpdate",
        {"this_update": NOW, "next_update": NOW - datetime.timedelta(minutes=1)},
        2,
        "ResponseMalformed",
    ),
]


@pytest.mark.parametrize(("case", "answer", "code", "says"), CASES, ids=[c[0] for c in CASES])
async def test_verify_gives_each_response_its_exit_code(
    case: str, answer: dict[str, object], code: int, says: str, pki: TestPKI, tmp_path: Path
) -> None:
    leaf = pki.leaf()
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    (tmp_path / "staple.der").write_bytes(_response(pki, leaf, **answer))
    args = (
        "verify",
        "--response",
        str(tmp_path / "staple.der"),
        "--cert",
        str(tmp_path / "chain.pem"),
    )
    rc, out, err = await _run(*args)
    assert rc == code, (case, out, err)
    if code == 2:
        assert says in _one_line(err), err
    else:
        assert says in out, out
        assert "Traceback" not in err
    rc_json, out_json, _ = await _run(*args, "--json")
    assert rc_json == code
    report = json.loads(out_json)
    if "reason" in answer and code == 1:
        assert report["status"] == "revoked"
        assert report["revocation_reason_code"] == answer["reason"]


@pytest.mark.parametrize(
    ("case", "signer", "says"),
    [
        ("a delegate that is a CA", "ca_delegate", "a CA certificate"),
        ("a delegate without OCSPSigning", "delegate_without_eku", "SignerUnauthorized"),
        ("a stranger's key", "stranger", "SignerUnauthorized"),
    ],
)
async def test_verify_refuses_improper_signers(
    case: str, signer: str, says: str, pki: TestPKI, tmp_path: Path
) -> None:
    leaf = pki.leaf()
    issued = ca_delegate(pki) if signer == "ca_delegate" else getattr(pki, signer)
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    der = _response(pki, leaf, signer=issued)
    (tmp_path / "staple.der").write_bytes(der)
    rc, out, err = await _run(
        "verify", "--response", str(tmp_path / "staple.der"), "--cert", str(tmp_path / "chain.pem")
    )
    assert rc == 2, (case, out, err)
    assert says in _one_line(err)


async def test_verify_refuses_bytes_that_are_no_response(pki: TestPKI, tmp_path: Path) -> None:
    leaf = pki.leaf()
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    good = _response(pki, leaf)
    for i, junk in enumerate([b"", b"\x30\x03\x0a\x01\x00", good[: len(good) // 2], b"\xff" * 64]):
        path = tmp_path / f"junk{i}.der"
        path.write_bytes(junk)
        rc, out, err = await _run(
            "verify", "--response", str(path), "--cert", str(tmp_path / "chain.pem")
        )
        assert rc == 2, (junk, out, err)
        _one_line(err)


async def test_check_reports_a_revocation_with_an_odd_reason_as_revoked(
    pki: TestPKI, scripted: ScriptedServer, tmp_path: Path
) -> None:
    leaf = pki.leaf(ocsp_urls=[scripted.url + "/ocsp"])
    der = _response(pki, leaf, status="revoked", reason=7)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=der, content_type="application/ocsp-response")

    scripted.handler = answer
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    rc, out, err = await _run("check", "--allow-cidr", "127.0.0.0/8", str(tmp_path / "chain.pem"))
    assert rc == 1, (out, err)
    assert "status:      revoked" in out
    assert "(reason code 7)" in out


async def test_check_refuses_a_url_with_control_characters(pki: TestPKI, tmp_path: Path) -> None:
    leaf = pki.leaf()
    (tmp_path / "chain.pem").write_bytes(pki.chain_pem(leaf))
    rc, out, err = await _run(
        "check",
        "--allow-cidr",
        "127.0.0.0/8",
        "--url",
        "http://127.0.0.1:9/oc\x01sp",
        str(tmp_path / "chain.pem"),
    )
    assert rc == 2, (out, err)
    assert "DestinationRefused" in _one_line(err)
