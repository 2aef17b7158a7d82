"""Hostile variants made by the real `openssl ocsp`: MD5 CertIDs, MD5 signatures, and
delegated signers that break CA/B Forum BR 7.1.2.8 (a CA, no digitalSignature, an unknown
critical extension). Each ends in a named refusal; the proper delegate, the control, staples."""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from devcluster.pki import Issued, TestPKI, name, new_key
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, verify_response
from ocsp_stapler.ocsp.stapling import obtain_staple
from support.clocks import utcnow as now


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("pki-hostile")), "rsa")


def _delegate(
    pki: TestPKI,
    stem: str,
    *,
    ca: bool = False,
    digital_signature: bool = True,
    critical_unknown: bool = False,
) -> str:
    """A responder certificate issued by the intermediate, written where openssl finds it."""
    key = new_key("rsa")
    issuer = pki.intermediate
    t = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(f"Responder {stem}"))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t - datetime.timedelta(hours=1))
        .not_valid_after(t + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=not digital_signature,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"), b"\x05\x00"),
            critical=True,
        )
    Issued(cert=builder.sign(issuer.key, hashes.SHA256()), key=key).write(pki.dir, stem)
    return stem


@pytest.fixture(scope="module")
def responders(rsa_pki: TestPKI) -> Iterator[dict[str, OpenSSLResponder]]:
    kinds = {
        "proper": OpenSSLResponder(rsa_pki, signer=_delegate(rsa_pki, "proper")),
        "ca": OpenSSLResponder(rsa_pki, signer=_delegate(rsa_pki, "subca", ca=True)),
        "no_digital_signature": OpenSSLResponder(
            rsa_pki, signer=_delegate(rsa_pki, "keyenc", digital_signature=False)
        ),
        "critical_unknown": OpenSSLResponder(
            rsa_pki, signer=_delegate(rsa_pki, "critical", critical_unknown=True)
        ),
        "md5_signature": OpenSSLResponder(rsa_pki, signer="delegate", options=("-rmd", "md5")),
    }
    for r in kinds.values():
        r.start()
    yield kinds
    for r in kinds.values():
        r.stop()


@pytest.mark.parametrize(
    ("kind", "refusal", "says"),
    [
        ("proper", None, ""),
        ("ca", errors.SignerUnauthorized, "is a CA certificate"),
        ("no_digital_signature", errors.SignerUnauthorized, "lacks digitalSignature"),
        ("critical_unknown", errors.SignerUnauthorized, "1.3.6.1.4.1.55555.7"),
        ("md5_signature", errors.SignatureInvalid, "MD5"),
    ],
)
async def test_real_responder_variants(
    kind: str,
    refusal: type[errors.OCSPError] | None,
    says: str,
    rsa_pki: TestPKI,
    responders: dict[str, OpenSSLResponder],
    fetch: HttpFetcher,
) -> None:
    leaf = rsa_pki.leaf(ocsp_urls=[responders[kind].url])
    chain = assemble_chain(rsa_pki.chain_pem(leaf))
    if refusal is None:
        got = await obtain_staple(chain, fetch=fetch, clock=now)
        assert got.staple.status is CertStatus.GOOD
        return
    with pytest.raises(refusal, match=says):
        await obtain_staple(chain, fetch=fetch, clock=now)


def test_an_md5_certid_from_the_real_responder_names_nobody(
    rsa_pki: TestPKI, responders: dict[str, OpenSSLResponder], tmp_path: Path
) -> None:
    """`openssl ocsp -md5` asks with an MD5 CertID and the responder echoes it; such a
    response (e.g. put into a Secret by hand) is not one for our certificate."""
    leaf = rsa_pki.leaf()
    leaf_path, _ = leaf.write(tmp_path, "leaf")
    out = tmp_path / "md5.der"
    subprocess.run(
        ["openssl", "ocsp", "-issuer", str(rsa_pki.path("intermediate")), "-md5",
         "-cert", str(leaf_path), "-url", responders["proper"].url, "-respout", str(out), "-noverify"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    der = out.read_bytes()
    text = subprocess.run(
        ["openssl", "ocsp", "-respin", str(out), "-resp_text", "-noverify"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "Hash Algorithm: md5" in text  # the real responder answered in MD5
    with pytest.raises(errors.CertIDMismatch):
        verify_response(
            der,
            cert_id=CertID.of(leaf.cert, rsa_pki.intermediate.cert),
            issuer=rsa_pki.intermediate.cert,
            now=now(),
        )
