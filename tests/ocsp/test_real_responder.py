"""The OCSP core against the real `openssl ocsp` responder, for RSA and ECDSA PKIs."""

from __future__ import annotations

import datetime
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ReasonFlags
from devcluster.pki import TestPKI, issue, name, new_key
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.responses import CertStatus, Signer, VerifyPolicy
from ocsp_stapler.ocsp.stapling import Fetched, StaplingConfig, obtain_staple
from support.clocks import utcnow as now


async def staple(
    pki: TestPKI,
    leaf_pem: bytes,
    fetch: HttpFetcher,
    **kwargs: object,
) -> Fetched:
    return await obtain_staple(assemble_chain(leaf_pem), fetch=fetch, clock=now, **kwargs)  # type: ignore[arg-type]


async def test_good_signed_by_the_issuer(
    pki: TestPKI, responder: OpenSSLResponder, fetch: HttpFetcher
) -> None:
    leaf = pki.leaf(ocsp_urls=[responder.url])
    got = await staple(pki, pki.chain_pem(leaf), fetch)
    s = got.staple
    assert s.status is CertStatus.GOOD
    assert s.signer is Signer.ISSUER
    assert s.serial_number == leaf.cert.serial_number
    assert got.responder_url == responder.url
    assert s.next_update is not None
    assert s.this_update <= now() < s.next_update
    assert s.next_update - s.this_update == datetime.timedelta(days=1)


async def test_good_signed_by_a_delegated_responder(
    pki: TestPKI, delegated_responder: OpenSSLResponder, fetch: HttpFetcher, tmp_path: Path
) -> None:
    leaf = pki.leaf(ocsp_urls=[delegated_responder.url])
    got = await staple(pki, pki.chain_pem(leaf), fetch)
    assert got.staple.status is CertStatus.GOOD
    assert got.staple.signer is Signer.DELEGATED
    # openssl itself agrees the DER we kept is a valid response for this certificate.
    resp = tmp_path / "staple.der"
    resp.write_bytes(got.staple.der)
    out = subprocess.run(
        ["openssl", "ocsp", "-respin", str(resp), "-CAfile", str(pki.path("root")),
         "-issuer", str(pki.path("intermediate")), "-verify_other", str(pki.path("intermediate")),
         "-cert", "/dev/stdin"],
        input=leaf.pem, capture_output=True, check=True,
    )  # fmt: skip
    assert b"Response verify OK" in out.stderr + out.stdout
    assert b": good" in out.stdout


async def test_revoked_with_time_and_reason(
    pki: TestPKI, responder: OpenSSLResponder, fetch: HttpFetcher
) -> None:
    leaf = pki.leaf(ocsp_urls=[responder.url])
    when = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(hours=2)
    pki.set_status(leaf, "R", revoked_at=when, reason="keyCompromise")
    got = await staple(pki, pki.chain_pem(leaf), fetch)
    assert got.staple.status is CertStatus.REVOKED
    assert got.staple.revocation_time == when
    assert got.staple.revocation_reason == ReasonFlags.key_compromise.value


async def test_unknown_serial(
    pki: TestPKI, responder: OpenSSLResponder, fetch: HttpFetcher
) -> None:
    leaf = pki.leaf(ocsp_urls=[responder.url], register=False)
    got = await staple(pki, pki.chain_pem(leaf), fetch)
    assert got.staple.status is CertStatus.UNKNOWN


async def test_a_corrupted_signature_is_rejected(pki: TestPKI, fetch: HttpFetcher) -> None:
    with OpenSSLResponder(pki, options=("-badsig",)) as bad:
        leaf = pki.leaf(ocsp_urls=[bad.url])
        with pytest.raises(errors.SignatureInvalid):
            await staple(pki, pki.chain_pem(leaf), fetch)


@pytest.mark.parametrize(
    ("signer", "expected"),
    [
        ("delegate-no-eku", "lacks id-kp-OCSPSigning"),
        ("delegate-expired", "not valid now"),
        ("stranger", "not issued by the certificate.s issuer"),
    ],
)
async def test_an_unauthorized_signer_is_rejected(
    pki: TestPKI, fetch: HttpFetcher, signer: str, expected: str
) -> None:
    with OpenSSLResponder(pki, signer=signer) as bad:
        leaf = pki.leaf(ocsp_urls=[bad.url])
        with pytest.raises(errors.SignerUnauthorized, match=expected):
            await staple(pki, pki.chain_pem(leaf), fetch)


async def test_delegate_not_issued_by_the_issuer_is_rejected(
    ec_pki: TestPKI, fetch: HttpFetcher
) -> None:
    """A signer with the OCSP EKU, but from another CA, cannot speak for our issuer."""
    rogue = issue(
        subject=name("Rogue OCSP Signer"),
        key=new_key("ec"),
        issuer=ec_pki.stranger,
        eku=[x509.ExtendedKeyUsageOID.OCSP_SIGNING],
    )
    rogue.write(ec_pki.dir, "rogue")
    with OpenSSLResponder(ec_pki, signer="rogue") as bad:
        leaf = ec_pki.leaf(ocsp_urls=[bad.url])
        with pytest.raises(
            errors.SignerUnauthorized, match="not issued by the certificate's issuer"
        ):
            await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)


async def test_responder_identified_by_key_hash(pki: TestPKI, fetch: HttpFetcher) -> None:
    with OpenSSLResponder(pki, signer="delegate", options=("-resp_key_id",)) as r:
        leaf = pki.leaf(ocsp_urls=[r.url])
        got = await staple(pki, pki.chain_pem(leaf), fetch)
        assert got.staple.signer is Signer.DELEGATED
    with OpenSSLResponder(pki, options=("-resp_key_id",)) as r:
        leaf = pki.leaf(ocsp_urls=[r.url])
        assert (await staple(pki, pki.chain_pem(leaf), fetch)).staple.signer is Signer.ISSUER


async def test_delegated_signer_without_certs_in_the_response_is_rejected(
    pki: TestPKI, fetch: HttpFetcher
) -> None:
    with OpenSSLResponder(pki, signer="delegate", options=("-resp_no_certs",)) as r:
        leaf = pki.leaf(ocsp_urls=[r.url])
        with pytest.raises(errors.SignerUnauthorized, match="signed neither by the issuer"):
            await staple(pki, pki.chain_pem(leaf), fetch)


async def test_no_next_update_is_rejected_by_default_and_allowed_by_policy(
    ec_pki: TestPKI, fetch: HttpFetcher
) -> None:
    with OpenSSLResponder(ec_pki, validity_minutes=None) as r:
        leaf = ec_pki.leaf(ocsp_urls=[r.url])
        with pytest.raises(errors.NoNextUpdate):
            await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)
        lenient = StaplingConfig(verify=VerifyPolicy(require_next_update=False))
        got = await staple(ec_pki, ec_pki.chain_pem(leaf), fetch, config=lenient)
        assert got.staple.next_update is None
        assert got.staple.expires_at == got.staple.this_update + datetime.timedelta(hours=1)


async def test_sha256_cert_id(
    pki: TestPKI, responder: OpenSSLResponder, fetch: HttpFetcher
) -> None:
    leaf = pki.leaf(ocsp_urls=[responder.url])
    got = await staple(pki, pki.chain_pem(leaf), fetch, config=StaplingConfig(hash_name="sha256"))
    assert got.staple.status is CertStatus.GOOD


async def test_nonce_round_trip(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    with OpenSSLResponder(ec_pki) as r:
        leaf = ec_pki.leaf(ocsp_urls=[r.url])
        got = await staple(ec_pki, ec_pki.chain_pem(leaf), fetch, config=StaplingConfig(nonce=True))
        assert got.staple.status is CertStatus.GOOD


async def test_responder_down_is_a_fetch_failure(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    r = OpenSSLResponder(ec_pki).start()
    url = r.url
    r.stop()
    leaf = ec_pki.leaf(ocsp_urls=[url])
    with pytest.raises(errors.FetchFailed, match="cannot connect"):
        await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)


async def test_failover_to_the_second_responder(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    dead = OpenSSLResponder(ec_pki).start()
    dead_url = dead.url
    dead.stop()
    with OpenSSLResponder(ec_pki) as alive:
        leaf = ec_pki.leaf(ocsp_urls=[dead_url, alive.url])
        got = await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)
        assert got.responder_url == alive.url


async def test_override_url_wins_over_aia(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    with OpenSSLResponder(ec_pki) as r:
        leaf = ec_pki.leaf(ocsp_urls=["http://127.0.0.1:9/never"])
        got = await staple(ec_pki, ec_pki.chain_pem(leaf), fetch, override_url=r.url)
        assert got.responder_url == r.url


async def test_no_ocsp_url_is_its_own_outcome(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    leaf = ec_pki.leaf(ocsp_urls=[])
    with pytest.raises(errors.NoResponder) as info:
        await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)
    assert info.value.retryable is False


async def test_never_go_backwards(ec_pki: TestPKI, fetch: HttpFetcher) -> None:
    with OpenSSLResponder(ec_pki) as r:
        leaf = ec_pki.leaf(ocsp_urls=[r.url])
        first = (await staple(ec_pki, ec_pki.chain_pem(leaf), fetch)).staple
        newer = replace(first, this_update=first.this_update + datetime.timedelta(minutes=1))
        with pytest.raises(errors.Stale):
            await staple(ec_pki, ec_pki.chain_pem(leaf), fetch, held=newer)
        # The same or a newer thisUpdate than held is fine.
        assert (
            await staple(ec_pki, ec_pki.chain_pem(leaf), fetch, held=first)
        ).staple.status is CertStatus.GOOD
