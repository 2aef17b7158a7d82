"""The configuration the watcher sends to workers, built from the informers' caches.

A snapshot holds the route table and every certificate our Ingresses name in ``spec.tls``:
chain, key, the SNI hosts it serves, and the staple to serve (checked by ``staples``, cached
per certificate version and staple, so an unchanged Secret costs nothing on the next build).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ocsp_stapler.ingress.routes import ClusterView, build_table, ours, table_to_wire, tls_bindings
from ocsp_stapler.ingress.staples import ServableStaple, servable_staple

DEFAULT_ID = "_default"
Obj = Mapping[str, Any]


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


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
    _checked: dict[tuple[str, str], tuple[ServableStaple | None, str]] = field(default_factory=dict)

    def our_class(self, classes: Mapping[str, Obj]) -> tuple[bool, bool]:
        """(the class exists and is ours, it is the cluster default)."""
        cls = classes.get(self.class_name)
        if not cls or (cls.get("spec") or {}).get("controller") != self.controller:
            return False, False
        annotations = (cls.get("metadata") or {}).get("annotations") or {}
        return True, annotations.get("ingressclass.kubernetes.io/is-default-class") == "true"

    def _staple(self, version: str, data: Obj, chain: bytes) -> tuple[ServableStaple | None, str]:
        raw = data.get(self.staple_key)
        key = (version, raw if isinstance(raw, str) else "")
        cached = self._checked.get(key)
        if cached is None:
            cached = servable_staple(_b64(raw), chain, now=self.clock())
            self._checked[key] = cached
        staple, _ = cached
        if staple is not None and staple.expires_at <= self.clock().timestamp():
            return None, "the staple expired"
        return cached

    def _cert(
        self, secret_id: str, secret: Obj | None, hosts: tuple[str, ...]
    ) -> dict[str, Any] | None:
        if secret is None:
            return None
        data = secret.get("data") or {}
        chain, key = _b64(data.get("tls.crt")), _b64(data.get("tls.key"))
        if not chain or not key:
            return None
        version = hashlib.sha256(chain + b"\0" + key).hexdigest()
        staple, note = self._staple(version, data, chain)
        self.staple_notes[secret_id] = note
        return {
            "version": version,
            "chain": chain.decode("ascii", "replace"),
            "key": key.decode("ascii", "replace"),
            "hosts": list(hosts),
            "staple": staple.der.hex() if staple else None,
            "staple_expires": staple.expires_at if staple else None,
        }

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
        table = build_table(view, mine)
        hosts_by_secret: dict[str, list[str]] = {}
        for binding in tls_bindings(mine):
            hosts_by_secret.setdefault(binding.secret, []).extend(binding.hosts)
        certs: dict[str, dict[str, Any]] = {}
        for secret_id, hosts in sorted(hosts_by_secret.items()):
            cert = self._cert(secret_id, secrets.get(secret_id), tuple(dict.fromkeys(hosts)))
            if cert is not None:
                certs[secret_id] = cert
        default_id = self.default_secret if self.default_secret in certs else DEFAULT_ID
        if self.default_secret and self.default_secret not in certs:
            cert = self._cert(self.default_secret, secrets.get(self.default_secret), ())
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
                "staple": None,
                "staple_expires": None,
            }
        # Forget checks of certificate versions no longer in use.
        live = {c["version"] for c in certs.values()}
        self._checked = {k: v for k, v in self._checked.items() if k[0] in live}
        return {"routes": table_to_wire(table), "certs": certs, "default": default_id}
