"""Reading tls.crt: the leaf first, the issuer found by signature, bounded and clear on junk."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from devcluster.pki import TestPKI, issue, name, new_key

from ocsp_stapler.ocsp import chains, errors
from support.ocsp_der import explicit, octets, oid, seq


def test_issuer_is_found_by_signature_not_position(ec_pki: TestPKI) -> None:
    leaf = ec_pki.leaf()
    # root before intermediate, and a stranger with a look-alike position in the middle
    bundle = leaf.pem + ec_pki.root.pem + ec_pki.stranger.pem + ec_pki.intermediate.pem
    chain = chains.assemble_chain(bundle)
    assert chain.leaf == leaf.cert
    assert chain.issuer == ec_pki.intermediate.cert


def test_issuer_from_ca_crt(ec_pki: TestPKI) -> None:
    leaf = ec_pki.leaf()
    chain = chains.assemble_chain(leaf.pem, ec_pki.intermediate.pem)
    assert chain.issuer == ec_pki.intermediate.cert


def test_same_name_but_other_key_is_not_the_issuer(ec_pki: TestPKI) -> None:
    impostor = issue(
        subject=ec_pki.intermediate.cert.subject, key=new_key("ec"), issuer=ec_pki.root, ca=True
    )
    leaf = ec_pki.leaf()
    chain = chains.assemble_chain(leaf.pem + impostor.pem)
    assert chain.issuer is None


def test_a_chain_starting_with_a_ca_is_refused(ec_pki: TestPKI) -> None:
    leaf = ec_pki.leaf()
    with pytest.raises(errors.ChainInvalid, match="the leaf must come first"):
        chains.assemble_chain(ec_pki.intermediate.pem + leaf.pem)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PEM certificate"),
        (b"hello", "no PEM certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "not valid PEM"),
        (b"\x30\x82" * 200_000, "more than 262144"),
    ],
)
def test_junk_is_a_clear_chain_error(data: bytes, message: str) -> None:
    with pytest.raises(errors.ChainInvalid, match=message) as info:
        chains.assemble_chain(data)
    assert info.value.retryable is False


def test_too_many_certificates(ec_pki: TestPKI) -> None:
    leaf = ec_pki.leaf()
    with pytest.raises(errors.ChainInvalid, match="17 certificates, more than 16"):
        chains.assemble_chain(leaf.pem + ec_pki.intermediate.pem * 16)


def test_urls_are_read_in_order_and_capped(ec_pki: TestPKI) -> None:
    urls = [f"http://ocsp{i}.example.test/" for i in range(100)]
    leaf = ec_pki.leaf(ocsp_urls=urls, ca_issuer_urls=["http://ca.example.test/int.crt"])
    assert chains.ocsp_urls(leaf.cert) == urls[: chains.MAX_URLS]
    assert chains.ca_issuer_urls(leaf.cert) == ["http://ca.example.test/int.crt"]
    assert chains.ocsp_urls(ec_pki.leaf().cert) == []


def test_must_staple_and_fingerprints(ec_pki: TestPKI) -> None:
    plain, strict = ec_pki.leaf(), ec_pki.leaf(must_staple=True)
    assert not chains.must_staple(plain.cert)
    assert chains.must_staple(strict.cert)
    assert len(chains.sha256_hex(plain.cert)) == 64
    assert chains.sha256_hex(plain.cert) != chains.sha256_hex(strict.cert)
    assert int(chains.serial_hex(plain.cert), 16) == plain.cert.serial_number


def test_self_signed_leaf(ec_pki: TestPKI) -> None:
    selfie = issue(subject=name("self.example.test"), key=new_key("ec"), issuer=None)
    chain = chains.assemble_chain(selfie.pem)
    assert chain.self_signed
    assert chain.issuer is None


@pytest.mark.parametrize(
    "content_type",
    ["1.2.840.113549.1.7.1", "1.2.840.113549.1.7.3"],  # PKCS#7 data, envelopedData
)
def test_a_pkcs7_that_is_not_signed_data_is_a_chain_error(content_type: str) -> None:
    """What a caIssuers URL can answer: cryptography raises UnsupportedAlgorithm (not a
    ValueError) for these, and that must still end as ChainInvalid."""
    data = seq(oid(content_type), explicit(0, octets(b"x")))
    with pytest.raises(errors.ChainInvalid, match="neither a PEM, DER nor PKCS#7"):
        chains.load_certificates(data, what="the caIssuers answer")


@pytest.mark.parametrize("form", ["pem", "der"])
def test_a_certificate_with_an_unknown_version_is_a_chain_problem(pki: TestPKI, form: str) -> None:
    """cryptography raises InvalidVersion (no ValueError) for a version it does not know:
    found by the fuzzer (tests/chaos/test_fuzz.py) in a mutated tls.crt."""
    der = pki.leaf("version.example.test").cert.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a003020102")
    assert v3 in der
    odd = der.replace(v3, bytes.fromhex("a00302016a"), 1)  # version 106
    data = (
        odd
        if form == "der"
        else (
            b"-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(odd)
            + b"-----END CERTIFICATE-----\n"
        )
    )
    with pytest.raises(errors.ChainInvalid):
        chains.load_certificates(data, what="tls.crt")
    if form == "pem":
        with pytest.raises(errors.ChainInvalid):
            chains.parse_pem_certificates(data)
