"""The CLI reads what users have (#15, item 4): certificates in PEM, DER or PKCS#7, bundles in
any order (the leaf found by the chain, and named), errors naming the user's file, once, on
stderr, JSON for every error with --json (usage errors too), an expired certificate flagged,
a base64 or PEM staple met with a hint, refresh reasons in words, times to the second."""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID
from devcluster.pki import Issued, TestPKI, issue, name, new_key

CLI = str(Path(sys.executable).parent / "ocsp-stapler")
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("cli-inputs")), "ec")


def _staple(pki: TestPKI, leaf: Issued, tmp_path: Path) -> Path:
    der = pki.response(leaf, this_update=NOW - datetime.timedelta(hours=1),
                       next_update=NOW + datetime.timedelta(days=3))  # fmt: skip
    path = tmp_path / "staple.der"
    path.write_bytes(der)
    return path


def _chain_file(pki: TestPKI, tmp_path: Path, cn: str) -> tuple[Issued, Path]:
    """A new leaf, and chain.pem as cert-manager writes it (leaf, then intermediate)."""
    leaf = pki.leaf(cn)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.chain_pem(leaf))
    return leaf, chain


def _verify(staple: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("verify", "--response", str(staple), "--cert", str(cert), *extra)


def test_a_bundle_in_any_order_finds_its_leaf_and_says_which(pki: TestPKI, tmp_path: Path) -> None:
    leaf = pki.leaf("order.example.test")
    bundle = tmp_path / "fullchain.pem"
    bundle.write_bytes(pki.intermediate.pem + leaf.pem)  # the intermediate first
    result = _verify(_staple(pki, leaf, tmp_path), bundle)
    assert result.returncode == 0, result.stderr
    assert "status:      good" in result.stdout
    assert "leaf:        CN=order.example.test," in result.stdout
    assert f"serial {leaf.cert.serial_number:X} (certificate 2 of 2" in result.stdout
    assert f"certificate 2 of 2 in {bundle}" in result.stdout


def test_der_and_pkcs7_files_are_read(pki: TestPKI, tmp_path: Path) -> None:
    leaf = pki.leaf("forms.example.test")
    staple = _staple(pki, leaf, tmp_path)
    der_leaf, der_issuer = tmp_path / "leaf.cer", tmp_path / "issuer.cer"
    der_leaf.write_bytes(leaf.cert.public_bytes(serialization.Encoding.DER))
    der_issuer.write_bytes(pki.intermediate.cert.public_bytes(serialization.Encoding.DER))
    assert _verify(staple, der_leaf, "--issuer", str(der_issuer)).returncode == 0
    for encoding, suffix in (
        (serialization.Encoding.DER, "p7b"),
        (serialization.Encoding.PEM, "p7c"),
    ):
        p7 = tmp_path / f"bundle.{suffix}"
        p7.write_bytes(pkcs7.serialize_certificates([pki.intermediate.cert, leaf.cert], encoding))
        result = _verify(staple, p7, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["leaf"].startswith("CN=forms.example.test")


def test_an_error_names_the_users_file_once_on_stderr(tmp_path: Path) -> None:
    mine = tmp_path / "my-cert.crt"
    mine.write_text("not a certificate")
    staple = tmp_path / "s.der"
    staple.write_bytes(b"\x30\x00")
    result = _verify(staple, mine)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(mine) in lines[0]
    assert "tls.crt" not in lines[0]


def test_json_answers_usage_errors_too(tmp_path: Path) -> None:
    result = run("verify", "--json", "--response", str(tmp_path / "missing.der"), "--cert", "x")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["reason"] == "UsageError"
    assert "missing.der" in doc["error"]
    assert len(result.stderr.strip().splitlines()) == 1
    unknown = run("check", "--json", "--no-such-option")
    assert (unknown.returncode, json.loads(unknown.stdout)["reason"]) == (2, "UsageError")


def test_an_expired_certificate_is_flagged(pki: TestPKI, tmp_path: Path) -> None:
    expired = issue(
        subject=name("old.example.test"), key=new_key("ec"), issuer=pki.intermediate,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH], not_before=NOW - datetime.timedelta(days=90),
        not_after=NOW - datetime.timedelta(days=1),
    )  # fmt: skip
    chain = tmp_path / "old.pem"
    chain.write_bytes(pki.chain_pem(expired))
    staple = _staple(pki, expired, tmp_path)
    text = _verify(staple, chain)
    assert "warning:     the certificate expired at" in text.stdout
    doc = json.loads(_verify(staple, chain, "--json").stdout)
    assert doc["certificate_warning"].startswith("the certificate expired at")
    # Failing, too: an expired certificate is often why (responders stop answering for it).
    foreign = _staple(pki, pki.leaf("other.example.test"), tmp_path)
    failed = _verify(foreign, chain)
    assert failed.returncode == 2
    assert "(the certificate expired at" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    doc = json.loads(_verify(foreign, chain, "--json").stdout)
    assert doc["certificate_warning"].startswith("the certificate expired at")
    assert doc["leaf"] is not None
    assert doc["error"] is not None


def test_a_staple_given_as_base64_or_pem_gets_a_hint(pki: TestPKI, tmp_path: Path) -> None:
    leaf, chain = _chain_file(pki, tmp_path, "hint.example.test")
    der = _staple(pki, leaf, tmp_path).read_bytes()
    as_base64 = tmp_path / "staple.b64"
    as_base64.write_bytes(base64.b64encode(der) + b"\n")
    result = _verify(as_base64, chain)
    assert result.returncode == 2
    assert "base64 -d" in result.stderr
    as_pem = tmp_path / "staple.pem"
    as_pem.write_bytes(b"-----BEGIN OCSP RESPONSE-----\n" + base64.encodebytes(der)
                       + b"-----END OCSP RESPONSE-----\n")  # fmt: skip
    assert "PEM text" in _verify(as_pem, chain).stderr


def test_refresh_reasons_in_words_and_times_to_the_second(pki: TestPKI, tmp_path: Path) -> None:
    leaf, chain = _chain_file(pki, tmp_path, "words.example.test")
    staple = _staple(pki, leaf, tmp_path)
    text = _verify(staple, chain).stdout
    assert "(the longest refresh interval)" in text or "(half-way through" in text
    doc = json.loads(_verify(staple, chain, "--json").stdout)
    for key in ("this_update", "next_update", "produced_at", "refresh_at"):
        assert "." not in doc[key], (key, doc[key])  # no microseconds
    assert doc["refresh_reason"] in {"the longest refresh interval",
                                     "half-way through the response's validity"}  # fmt: skip


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: nothing is written, 50 MB claimed
    result = run("verify", "--json", "--response", str(big), "--cert", str(big))
    assert result.returncode == 2
    assert json.loads(result.stdout)["reason"] == "UsageError"
    assert "larger than" in result.stderr


def test_usage_errors_are_one_line_and_exit_2_without_json(tmp_path: Path) -> None:
    for args in (("verify", "--response", str(tmp_path), "--cert", str(tmp_path)),
                 ("check", str(tmp_path / "x"), "--timeout", "inf")):  # fmt: skip
        result = run(*args)
        assert result.returncode == 2, args
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("ocsp-stapler: UsageError:")


def test_wrapped_base64_and_swapped_files_get_their_hints(pki: TestPKI, tmp_path: Path) -> None:
    leaf, chain = _chain_file(pki, tmp_path, "hints.example.test")
    der = _staple(pki, leaf, tmp_path).read_bytes()
    wrapped = tmp_path / "staple.b64"
    wrapped.write_bytes(base64.encodebytes(der))  # 76-column lines, as base64(1) writes
    result = _verify(wrapped, chain)
    assert "base64 -d" in result.stderr
    assert str(wrapped) in result.stderr
    swapped = run("verify", "--response", str(chain), "--cert", str(chain))
    assert "swapped" in swapped.stderr
