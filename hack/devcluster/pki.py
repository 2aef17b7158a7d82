"""A throwaway PKI for tests and the demo: root → intermediate → leaves, and OCSP signers.

Generated with ``cryptography`` once per test session (RSA and ECDSA flavours) and written to
disk in the layout the real ``openssl ocsp`` responder reads: the CA certificate, the signer's
certificate and key, and an ``index.txt`` that tests append leaves to (and revoke them in).
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
UTC = datetime.UTC


def new_key(kind: KeyType) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocsp-stapler tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def serial_hex(self) -> str:
        """As openssl's index.txt wants it: uppercase, an even number of digits."""
        text = format(self.cert.serial_number, "X")
        return text if len(text) % 2 == 0 else "0" + text

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(self.pem)
        key_path.write_bytes(self.key_pem)
        key_path.chmod(0o600)
        return cert_path, key_path


def issue(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    ca: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
    ocsp_urls: list[str] | None = None,
    ca_issuer_urls: list[str] | None = None,
    dns_names: list[str] | None = None,
    must_staple: bool = False,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    now = datetime.datetime.now(UTC)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(hours=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    access = [
        x509.AccessDescription(
            x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)
        )
        for u in ocsp_urls or []
    ] + [
        x509.AccessDescription(
            x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(u)
        )
        for u in ca_issuer_urls or []
    ]
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False
        )
    if must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False
        )
    return Issued(cert=builder.sign(signer_key, hashes.SHA256()), key=key)


def _index_line(leaf: Issued, status: str, revocation: str) -> str:
    """One line of openssl's index.txt (TAB-separated)."""
    expiry = leaf.cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    dn = "/" + "/".join(f"{a.rfc4514_attribute_name}={a.value}" for a in leaf.cert.subject)
    return "\t".join([status, expiry, revocation, leaf.serial_hex, "unknown", dn])


class TestPKI:
    """Root and intermediate CA, delegated OCSP signers, and an openssl-format index."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, kind: KeyType = "ec") -> None:
        self.dir = directory
        self.kind = kind
        directory.mkdir(parents=True, exist_ok=True)
        self.root = issue(
            subject=name(f"Test Root {kind}"), key=new_key(kind), issuer=None, ca=True
        )
        self.intermediate = issue(
            subject=name(f"Test Intermediate {kind}"), key=new_key(kind), issuer=self.root, ca=True
        )
        ocsp_signing = [ExtendedKeyUsageOID.OCSP_SIGNING]
        self.delegate = issue(
            subject=name(f"Test OCSP Signer {kind}"),
            key=new_key(kind),
            issuer=self.intermediate,
            eku=ocsp_signing,
        )
        self.delegate_without_eku = issue(
            subject=name(f"Test Signer Without EKU {kind}"),
            key=new_key(kind),
            issuer=self.intermediate,
            eku=[ExtendedKeyUsageOID.SERVER_AUTH],
        )
        now = datetime.datetime.now(UTC)
        self.delegate_expired = issue(
            subject=name(f"Test Expired Signer {kind}"),
            key=new_key(kind),
            issuer=self.intermediate,
            eku=ocsp_signing,
            not_before=now - datetime.timedelta(days=10),
            not_after=now - datetime.timedelta(days=1),
        )
        self.stranger = issue(
            subject=name(f"Test Unrelated CA {kind}"), key=new_key(kind), issuer=None, ca=True
        )
        for stem, issued in (
            ("root", self.root),
            ("intermediate", self.intermediate),
            ("delegate", self.delegate),
            ("delegate-no-eku", self.delegate_without_eku),
            ("delegate-expired", self.delegate_expired),
            ("stranger", self.stranger),
        ):
            issued.write(directory, stem)
        self.index_path = directory / "index.txt"
        # Many test leaves share a subject; without this openssl refuses to load the index.
        (directory / "index.txt.attr").write_text("unique_subject = no\n")
        self._index: dict[str, str] = {}
        self._lock = threading.Lock()
        self.on_index_change: list[Callable[[], None]] = []
        """Called after each index write: running responders poke themselves (see responders)."""
        self._write_index()

    def path(self, stem: str) -> Path:
        return self.dir / f"{stem}.pem"

    def key_path(self, stem: str) -> Path:
        return self.dir / f"{stem}.key"

    def leaf(
        self,
        cn: str = "www.example.test",
        *,
        ocsp_urls: list[str] | None = None,
        ca_issuer_urls: list[str] | None = None,
        must_staple: bool = False,
        register: bool = True,
        issuer: Issued | None = None,
        key: PrivateKey | None = None,
    ) -> Issued:
        """A server certificate from the intermediate, listed as valid in the index."""
        leaf = issue(
            subject=name(cn),
            key=key or new_key(self.kind),
            issuer=issuer or self.intermediate,
            eku=[ExtendedKeyUsageOID.SERVER_AUTH],
            ocsp_urls=ocsp_urls,
            ca_issuer_urls=ca_issuer_urls,
            dns_names=[cn],
            must_staple=must_staple,
        )
        if register:
            self.set_status(leaf, "V")
        return leaf

    def chain_pem(self, leaf: Issued) -> bytes:
        """tls.crt as cert-manager writes it: leaf, then intermediate."""
        return leaf.pem + self.intermediate.pem

    def set_status(
        self,
        leaf: Issued,
        status: Literal["V", "R"],
        *,
        revoked_at: datetime.datetime | None = None,
        reason: str | None = None,
    ) -> None:
        """Write (or rewrite) the leaf's line in index.txt; the responder re-reads it."""
        revocation = ""
        if status == "R":
            when = (revoked_at or datetime.datetime.now(UTC)).strftime("%y%m%d%H%M%SZ")
            revocation = f"{when},{reason}" if reason else when
        self._update({leaf.serial_hex: _index_line(leaf, status, revocation)})

    def register_many(self, leaves: list[Issued]) -> None:
        """List many leaves as valid with one index write."""
        self._update({leaf.serial_hex: _index_line(leaf, "V", "") for leaf in leaves})

    def _update(self, lines: dict[str, str]) -> None:
        with self._lock:
            self._index.update(lines)
            self._write_index()
        for callback in list(self.on_index_change):
            callback()

    def response(
        self,
        leaf: Issued,
        *,
        this_update: datetime.datetime,
        next_update: datetime.datetime | None,
        status: Literal["good", "revoked", "unknown"] = "good",
        signer: Issued | None = None,
    ) -> bytes:
        """A real, signed OCSP response with chosen times (e.g. one already expired), made
        the way a CA's delegated responder makes it."""
        signer = signer or self.delegate
        cert_status = {
            "good": ocsp.OCSPCertStatus.GOOD,
            "revoked": ocsp.OCSPCertStatus.REVOKED,
            "unknown": ocsp.OCSPCertStatus.UNKNOWN,
        }[status]
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=leaf.cert,
                issuer=self.intermediate.cert,
                algorithm=hashes.SHA1(),  # noqa: S303 (the CertID hash responders answer)
                cert_status=cert_status,
                this_update=this_update,
                next_update=next_update,
                revocation_time=this_update if status == "revoked" else None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
            .certificates([signer.cert])
        )
        response = builder.sign(signer.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)

    def forget(self, leaf: Issued) -> None:
        """Drop the leaf from index.txt: the responder then answers "unknown" for it."""
        with self._lock:
            self._index.pop(leaf.serial_hex, None)
        self._update({})

    def _write_index(self) -> None:
        """Replace index.txt with a strictly newer mtime: openssl re-reads the index when its
        mtime (whole seconds), ctime or inode changes, and a write within the same second
        on a reused inode would otherwise go unseen."""
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in self._index.values()))
        self._mtime = max(getattr(self, "_mtime", 0) + 1, int(time.time()))
        os.utime(tmp, (self._mtime, self._mtime))
        os.replace(tmp, self.index_path)
