"""The configuration the supervisor sends to workers, built from the informers' caches.

A snapshot holds the route table and every certificate our Ingresses name in ``spec.tls``:
chain, key, the SNI hosts it serves, and the staple to serve (checked by ``staples``, cached
per certificate version and staple, so an unchanged Secret costs nothing on the next build).

The ingress is shared: every tenant who may create an Ingress of our class and a Secret in
their own namespace feeds it bytes. So each Secret is judged on its own, and whatever goes
wrong with one (unreadable data, a certificate or key that cannot be used, a staple that a
parser chokes on, even a bug of ours) becomes a ``SecretProblem`` for that Secret alone:

- a broken or mismatched certificate or key: its hosts are not served (they get the default
  certificate, like an unknown SNI name);
- a staple that is refused: its hosts are served, without a staple.

Every other tenant's entry is built as if that Secret did not exist. Which hosts a
certificate answers for is decided here too (``claims``): the names of its tls entries that
its namespace holds and that the certificate covers, the oldest Ingress first; a name left
out is a ``Refusal`` on the Ingress that listed it. The certificate and key
are checked here, once per version, the way the workers will load them (a trial OpenSSL
Context), so a Secret that would fail in every worker is reported once, with a reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ocsp_stapler.ingress.claims import (
    HOST_NOT_IN_CERTIFICATE,
    HostOwners,
    NamesOf,
    Refusal,
    certificate_covers,
    covering_wildcard,
    host_key,
    oldest_first,
)
from ocsp_stapler.ingress.routes import (
    ClusterView,
    RouteTable,
    TLSBinding,
    build_table,
    ours,
    table_to_wire,
    tls_bindings,
)
from ocsp_stapler.ingress.staples import ServableStaple, StapleCheck, servable_staple
from ocsp_stapler.ingress.tls import dns_names, server_context
from ocsp_stapler.names import CA_CERT_KEY, STAPLE_ISSUER
from ocsp_stapler.ocsp.chains import is_ca, is_self_signed, parse_pem_certificates
from ocsp_stapler.ocsp.errors import ChainInvalid
from ocsp_stapler.ocsp.responses import VerifyPolicy

logger = logging.getLogger("ocsp_stapler.ingress")

DEFAULT_ID = "_default"
Obj = Mapping[str, Any]

MAX_KEY_BYTES = 64 * 1024
"""A tls.key larger than this is refused before parsing (an RSA-16384 key is ~13 KiB)."""

# Why a Secret cannot be used as it is (Event reasons and the ``reason`` metric label).
SECRET_UNREADABLE = "SecretUnreadable"  # noqa: S105 (a reason, not a password)
"""tls.crt or tls.key is missing, empty, or not base64."""
CERTIFICATE_INVALID = "CertificateInvalid"
"""tls.crt is not a PEM chain that starts with the server's certificate."""
KEY_INVALID = "KeyInvalid"
"""tls.key is not an unencrypted PEM private key of a type TLS servers use."""
KEY_MISMATCH = "KeyMismatch"
"""tls.key is not the key of tls.crt's first certificate."""
CERTIFICATE_REFUSED = "CertificateRefused"
"""OpenSSL would not load the pair (e.g. a key too weak for its security level)."""
STAPLE_REJECTED = "StapleRejected"
"""The staple is not served: it does not verify for this certificate, or cannot be read."""
CHECK_FAILED = "CheckFailed"
"""Checking the Secret raised something unexpected (a bug): its hosts are not served."""
REASONS = (
    SECRET_UNREADABLE,
    CERTIFICATE_INVALID,
    KEY_INVALID,
    KEY_MISMATCH,
    CERTIFICATE_REFUSED,
    STAPLE_REJECTED,
    CHECK_FAILED,
)


@dataclass(frozen=True)
class SecretProblem:
    """Why (part of) a Secret is not served."""

    secret: str
    """namespace/name."""
    reason: str
    message: str
    digest: str
    """Of the Secret data the verdict is about: one log line and one Event per digest."""
    served: bool
    """Its hosts are still served (without a staple), or not at all."""


@dataclass(frozen=True)
class _Pair:
    """A certificate and key that load: canonical PEM, exactly what the workers will load."""

    version: str
    chain: str
    key: str
    names: tuple[str, ...] = ()
    """The DNS names the certificate is valid for (its SAN)."""


@dataclass(frozen=True)
class _Refused:
    reason: str
    message: str


class _Unusable(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _fingerprint(*values: Any) -> str:
    h = hashlib.sha256()
    for value in values:
        h.update(value.encode() if isinstance(value, str) else f"<{type(value).__name__}>".encode())
        h.update(b"\0")
    return h.hexdigest()


_TLS_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def load_pair(chain: bytes, key: bytes) -> tuple[str, str]:
    """The chain and key as canonical PEM, or ``_Unusable`` saying what is wrong with them."""
    try:
        certs = parse_pem_certificates(chain, what="tls.crt")
    except ChainInvalid as exc:
        raise _Unusable(CERTIFICATE_INVALID, exc.message) from None
    leaf = certs[0]
    if is_ca(leaf) and not is_self_signed(leaf):
        raise _Unusable(
            CERTIFICATE_INVALID,
            f"tls.crt starts with a CA certificate ({leaf.subject.rfc4514_string()}); "
            "the server's certificate must come first",
        )
    if len(key) > MAX_KEY_BYTES:
        raise _Unusable(KEY_INVALID, f"tls.key is {len(key)} bytes, more than {MAX_KEY_BYTES}")
    try:
        # The RSA consistency check costs ~50 ms a key; whether the key fits the certificate
        # is checked below, and a key inconsistent in itself only spoils its own handshakes.
        private = serialization.load_pem_private_key(
            key, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError as exc:  # encrypted, or a password where none is needed
        raise _Unusable(KEY_INVALID, f"tls.key cannot be used: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _Unusable(KEY_INVALID, f"tls.key is not a PEM private key: {exc}") from None
    if not isinstance(private, _TLS_KEY_TYPES):
        raise _Unusable(KEY_INVALID, f"tls.key is a {type(private).__name__}, not a TLS key")
    if _spki(private.public_key()) != _spki(leaf.public_key()):
        raise _Unusable(
            KEY_MISMATCH,
            f"tls.key is not the key of the certificate in tls.crt "
            f"({leaf.subject.rfc4514_string()})",
        )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        server_context(chain_pem, key_pem)
    except Exception as exc:  # OpenSSL's refusal, whatever its type
        raise _Unusable(CERTIFICATE_REFUSED, f"OpenSSL refuses the pair: {exc!r}") from None
    return chain_pem.decode("ascii"), key_pem.decode("ascii")


@dataclass
class SnapshotBuilder:
    class_name: str
    controller: str
    staple_key: str
    default_secret: str
    fallback_certificate: tuple[str, str]
    """(chain PEM, key PEM) of the self-signed certificate for unmatched SNI."""
    clock: Callable[[], datetime.datetime]
    staple_notes: dict[str, str] = field(default_factory=dict)
    """Why a certificate has no staple served, by Secret (for logs and tests)."""
    problems: dict[str, SecretProblem] = field(default_factory=dict)
    """The Secrets of the last build that are not (fully) served, by namespace/name."""
    referrers: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    """Our Ingresses naming each Secret in spec.tls (namespace, name, uid), last build."""
    skipped_ingresses: dict[str, str] = field(default_factory=dict)
    """Ingresses left out of the route table of the last build, and why."""
    ingress_refs: dict[str, dict[str, str]] = field(default_factory=dict)
    """Our Ingresses of the last build (Event targets), by namespace/name."""
    refusals: list[Refusal] = field(default_factory=list)
    """Hosts of our Ingresses left out of the last build (another namespace holds them, or
    the certificate does not cover them)."""
    load_pair: Callable[[bytes, bytes], tuple[str, str]] = load_pair
    """How a chain and key are checked (a parameter, so tests can make it fail)."""
    check_staple: Callable[..., StapleCheck] = servable_staple
    """How a staple is judged for its chain (a parameter, so tests can make it fail)."""
    _pairs: dict[str, _Pair | _Refused] = field(default_factory=dict)
    _live_pairs: set[str] = field(default_factory=set)
    _failures_logged: dict[str, str] = field(default_factory=dict)
    verify_policy: VerifyPolicy = field(default_factory=VerifyPolicy)
    """The rules a staple must meet: the operator's (the same chart values)."""
    _checked: dict[tuple[str, str, str], StapleCheck] = field(default_factory=dict)

    def our_class(self, classes: Mapping[str, Obj]) -> tuple[bool, bool]:
        """(the class exists and is ours, it is the cluster default)."""
        cls = classes.get(self.class_name)
        if not cls or (cls.get("spec") or {}).get("controller") != self.controller:
            return False, False
        annotations = (cls.get("metadata") or {}).get("annotations") or {}
        return True, annotations.get("ingressclass.kubernetes.io/is-default-class") == "true"

    # ------------------------------------------------------------------ one Secret

    def _pair(self, digest: str, data: Obj) -> _Pair | _Refused:
        cached = self._pairs.get(digest)
        if cached is not None:
            return cached
        chain, key = _b64(data.get("tls.crt")), _b64(data.get("tls.key"))
        verdict: _Pair | _Refused
        if not chain or not key:
            missing = [k for k, v in (("tls.crt", chain), ("tls.key", key)) if not v]
            verdict = _Refused(
                SECRET_UNREADABLE, f"{' and '.join(missing)}: missing, empty or not base64"
            )
        else:
            try:
                chain_pem, key_pem = self.load_pair(chain, key)
            except _Unusable as exc:
                verdict = _Refused(exc.reason, exc.message)
            else:
                version = hashlib.sha256(f"{chain_pem}\0{key_pem}".encode()).hexdigest()
                leaf = x509.load_pem_x509_certificate(chain_pem.encode("ascii"))
                names = tuple(dict.fromkeys(n for n in map(host_key, dns_names(leaf)) if n))
                verdict = _Pair(version, chain_pem, key_pem, names)
        self._pairs[digest] = verdict
        return verdict

    def _staple(self, pair: _Pair, raw: Any, ca: Any, issuer: Any) -> StapleCheck:
        key = (
            pair.version,
            raw if isinstance(raw, str) else _fingerprint(raw),
            _fingerprint(ca, issuer),
        )
        cached = self._checked.get(key)
        if cached is None:
            der = _b64(raw)
            if raw and not der:
                cached = StapleCheck(None, f"{self.staple_key} is not base64", rejected=True)
            else:
                try:
                    cached = self.check_staple(
                        der,
                        pair.chain.encode(),
                        now=self.clock(),
                        ca_pem=_b64(ca),
                        issuer_der=_b64(issuer),
                        policy=self.verify_policy,
                    )
                except Exception as exc:  # a bad staple costs only the staple
                    logger.exception("checking the staple of certificate %s failed", pair.version)
                    cached = StapleCheck(None, f"check failed: {exc!r}", rejected=True)
            self._checked[key] = cached
        if cached.staple is not None and cached.staple.expires_at <= self.clock().timestamp():
            return StapleCheck(None, "the staple expired")
        return cached

    def _cert(self, secret_id: str, secret: Obj | None) -> dict[str, Any] | None:
        if secret is None:
            return None
        data = secret.get("data") or {}
        if not isinstance(data, Mapping):
            data = {}
        digest = _fingerprint(data.get("tls.crt"), data.get("tls.key"))
        self._live_pairs.add(digest)
        pair = self._pair(digest, data)
        if isinstance(pair, _Refused):
            self.problems[secret_id] = SecretProblem(
                secret_id, pair.reason, pair.message, digest, served=False
            )
            return None
        raw_staple = data.get(self.staple_key)
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        issuer = annotations.get(STAPLE_ISSUER) if isinstance(annotations, Mapping) else None
        check = self._staple(pair, raw_staple, data.get(CA_CERT_KEY), issuer)
        self.staple_notes[secret_id] = check.note
        if check.rejected:
            self.problems[secret_id] = SecretProblem(
                secret_id,
                STAPLE_REJECTED,
                check.note,
                _fingerprint(digest, raw_staple),
                served=True,
            )
        staple: ServableStaple | None = check.staple
        return {
            "version": pair.version,
            "chain": pair.chain,
            "key": pair.key,
            "hosts": [],
            "names": list(pair.names),
            "staple": staple.der.hex() if staple else None,
            "staple_expires": staple.expires_at if staple else None,
        }

    def _guarded_cert(self, secret_id: str, secret: Obj | None) -> dict[str, Any] | None:
        """The per-Secret boundary: whatever one Secret makes raise, it alone is skipped."""
        try:
            return self._cert(secret_id, secret)
        except Exception as exc:  # one tenant's Secret never stops the build
            digest = _fingerprint(repr(exc))
            if self._failures_logged.get(secret_id) != digest:
                self._failures_logged[secret_id] = digest
                logger.exception("checking Secret %s failed; its hosts are not served", secret_id)
            self.problems[secret_id] = SecretProblem(
                secret_id, CHECK_FAILED, f"unexpected {exc!r}", digest, served=False
            )
            return None

    # ------------------------------------------------------------------ Ingresses

    def _table(
        self, view: ClusterView, mine: list[Obj], names_of: NamesOf
    ) -> tuple[RouteTable, list[Obj], HostOwners]:
        """The route table; an Ingress that makes it fail is left out, not every Ingress."""
        try:
            owners = HostOwners.of(mine, names_of)
            table = build_table(view, mine, owners)
        except Exception:  # find the Ingress(es) at fault, keep the others
            logger.debug("the route table failed; trying each Ingress alone", exc_info=True)
        else:
            self.skipped_ingresses = {}
            return table, mine, owners
        kept: list[Obj] = []
        skipped: dict[str, str] = {}
        for ing in mine:
            try:
                build_table(view, [ing], HostOwners.of([ing], names_of))
                list(tls_bindings([ing]))
            except Exception as exc:
                meta = ing.get("metadata") or {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                skipped[key] = repr(exc)
                if self.skipped_ingresses.get(key) != repr(exc):
                    logger.exception("Ingress %s cannot be routed; it is left out", key)
            else:
                kept.append(ing)
        self.skipped_ingresses = skipped
        owners = HostOwners.of(kept, names_of)
        return build_table(view, kept, owners), kept, owners

    def _referrers(self, ingresses: Iterable[Obj]) -> dict[str, list[dict[str, str]]]:
        """Our Ingresses naming each Secret; ``ingress_refs`` by namespace/name on the way."""
        found: dict[str, list[dict[str, str]]] = {}
        self.ingress_refs = {}
        for ing in ingresses:
            meta = ing.get("metadata") or {}
            ref = {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "namespace": str(meta.get("namespace", "default")),
                "name": str(meta.get("name", "")),
                "uid": str(meta.get("uid", "")),
            }
            self.ingress_refs[f"{ref['namespace']}/{ref['name']}"] = ref
            for binding in tls_bindings([ing]):
                refs = found.setdefault(binding.secret, [])
                if ref not in refs:
                    refs.append(ref)
        return found

    # ------------------------------------------------------------------ the snapshot

    def build(
        self,
        *,
        ingresses: Mapping[str, Obj],
        classes: Mapping[str, Obj],
        services: Mapping[str, Obj],
        slices: Mapping[str, Obj],
        secrets: Mapping[str, Obj],
    ) -> dict[str, Any]:
        exists, is_default = self.our_class(classes)
        mine = [
            i
            for i in ingresses.values()
            if exists and ours(i, class_name=self.class_name, is_default_class=is_default)
        ]
        view = ClusterView(ingresses=dict(ingresses), services=dict(services), slices=dict(slices))
        self.problems = {}
        self._live_pairs = set()
        checked: dict[str, dict[str, Any] | None] = {}

        def cert_of(secret_id: str) -> dict[str, Any] | None:
            if secret_id not in checked:
                checked[secret_id] = self._guarded_cert(secret_id, secrets.get(secret_id))
            return checked[secret_id]

        def names_of(secret_id: str) -> list[str]:
            cert = cert_of(secret_id)
            return list(cert["names"]) if cert else []

        table, mine, owners = self._table(view, oldest_first(mine), names_of)
        bindings = tls_bindings(mine)
        self.referrers = self._referrers(mine)
        certs: dict[str, dict[str, Any]] = {}
        for secret_id in dict.fromkeys(b.secret for b in bindings):
            cert = cert_of(secret_id)
            if cert is not None:
                certs[secret_id] = cert
        # Only the Secrets of the Ingresses kept count (one left out may have named others).
        self.problems = {k: v for k, v in self.problems.items() if k in self.referrers}
        self.refusals = list(owners.refused)
        bound = self._bind_hosts(bindings, certs, owners)
        for host, secret_id in bound.items():
            certs[secret_id]["hosts"].append(host)
        # A host held by one namespace must not get another namespace's wildcard certificate
        # when its own binds none: it gets the default certificate, like an unknown name.
        unbound = sorted(
            host
            for host, namespace in owners.owners.items()
            if host
            and host not in bound
            and (wildcard := covering_wildcard(host)) is not None
            and wildcard in bound
            and bound[wildcard].split("/", 1)[0] != namespace
        )
        default_id = self.default_secret if self.default_secret in certs else DEFAULT_ID
        if self.default_secret and self.default_secret not in certs:
            cert = self._guarded_cert(self.default_secret, secrets.get(self.default_secret))
            if cert is not None:
                certs[self.default_secret] = cert
                default_id = self.default_secret
        if default_id == DEFAULT_ID:
            chain_pem, key_pem = self.fallback_certificate
            certs[DEFAULT_ID] = {
                "version": hashlib.sha256(chain_pem.encode()).hexdigest(),
                "chain": chain_pem,
                "key": key_pem,
                "hosts": [],
                "names": [],
                "staple": None,
                "staple_expires": None,
            }
        # Forget checks of Secret data and certificate versions no longer in use.
        self._pairs = {k: v for k, v in self._pairs.items() if k in self._live_pairs}
        self._failures_logged = {
            k: v for k, v in self._failures_logged.items() if k in self.problems
        }
        live = {c["version"] for c in certs.values()}
        self._checked = {k: v for k, v in self._checked.items() if k[0] in live}
        return {
            "routes": table_to_wire(table),
            "certs": certs,
            "default": default_id,
            "unbound": unbound,
        }

    def _bind_hosts(
        self, bindings: Iterable[TLSBinding], certs: Mapping[str, Any], owners: HostOwners
    ) -> dict[str, str]:
        """Host → the Secret whose certificate answers its SNI: the oldest Ingress's tls
        entry naming it, if its namespace holds the name and the certificate covers it. A
        tls entry without hosts binds the certificate's own names and the names its namespace
        holds that the certificate covers, where nobody else holds them."""
        bound: dict[str, str] = {}
        for binding in bindings:
            cert = certs.get(binding.secret)
            if cert is None:
                continue  # not served at all: a SecretProblem says why
            namespace = binding.secret.split("/", 1)[0]
            names = tuple(cert["names"])
            hosts = binding.hosts or (
                *names,
                *(h for h, ns in owners.owners.items() if ns == namespace and h not in names
                  and certificate_covers(names, h)),
            )  # fmt: skip
            for host in hosts:
                if host in bound or not host or not owners.allows(namespace, host):
                    continue  # a younger entry, or a name held elsewhere (a Refusal)
                if not certificate_covers(names, host):
                    self.refusals.append(
                        Refusal(
                            binding.ingress,
                            host,
                            HOST_NOT_IN_CERTIFICATE,
                            f"TLS Secret {binding.secret} has no certificate for {host} "
                            f"(it covers {', '.join(names) or 'no DNS name'}); "
                            f"{host} gets the default certificate",
                        )
                    )
                    continue
                bound[host] = binding.secret
        return bound
