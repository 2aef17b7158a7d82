"""Which namespace a host name belongs to: the first to claim it.

The ingress is shared by every tenant who may create an Ingress of our class, and an Ingress
names hosts freely. Merged naively (ingress-nginx merges same-host rules across namespaces),
a tenant could add a path under another tenant's host and receive part of its traffic,
cookies and all, or list that host in ``spec.tls`` and make their certificate answer its SNI.
So each host name belongs to one namespace, the one whose Ingress claimed it first (oldest
``creationTimestamp``, then namespace/name: the Gateway API's conflict rule). Another
namespace's rules and tls entries for that name are left out, and the Ingress that lost is
told with a Warning Event. Ingresses of one namespace share its hosts and merge as before.

Names an Ingress does not list but serves (a tls entry without hosts serves its
certificate's names) are claimed too, after every named claim, and quietly: a wildcard
certificate copied into many namespaces is normal and takes no one's named host.

Names overlap: ``*.example.com`` covers ``shop.example.com``. A claim also loses to an
older claim from another namespace on a wildcard covering it, so a tenant cannot take one
name out of another's wildcard; a younger wildcard simply does not cover names already held
(routes and SNI prefer the exact name). The hostless rules (``host`` unset, the catch-all)
are the name ``""``, claimed like any other.

Pure code over plain dicts, like ``routes``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

HOST_TAKEN = "HostTaken"
"""An Ingress names a host that an older Ingress of another namespace holds."""
HOST_NOT_IN_CERTIFICATE = "HostNotInCertificate"
"""A tls entry names a host its Secret's certificate does not cover."""
REASONS = (HOST_TAKEN, HOST_NOT_IN_CERTIFICATE)


def age_key(ingress: Obj) -> tuple[str, str, str]:
    """Oldest first: creationTimestamp (RFC 3339 UTC sorts as text), namespace, name."""
    meta = ingress.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp") or ""),
        str(meta.get("namespace") or "default"),
        str(meta.get("name") or ""),
    )


def oldest_first(ingresses: Iterable[Obj]) -> list[Obj]:
    return sorted(ingresses, key=age_key)


def host_key(host: Any) -> str:
    """A host as the claims and the route table key it: lower case, no trailing dot."""
    return str(host or "").strip().lower().rstrip(".")


def covering_wildcard(host: str) -> str | None:
    """``*.example.com`` for ``shop.example.com``; None for a wildcard, a single label or ''."""
    if not host or host.startswith("*."):
        return None
    dot = host.find(".")
    return f"*{host[dot:]}" if dot > 0 else None


def certificate_covers(names: Iterable[str], host: str) -> bool:
    """Whether a certificate with these DNS names is valid for ``host`` (RFC 6125: a
    wildcard stands for exactly one left-most label). A wildcard host needs the same
    wildcard in the certificate."""
    names = {host_key(n) for n in names}
    if host in names:
        return True
    wildcard = covering_wildcard(host)
    return wildcard is not None and wildcard in names


NamesOf = Callable[[str], Iterable[str]]
"""The DNS names of the certificate in a Secret (namespace/name); none if it is unusable."""


def _no_names(_secret: str) -> tuple[str, ...]:
    return ()


def claimed_hosts(ingress: Obj) -> list[str]:
    """The names an Ingress names: its rules' hosts ('' for a hostless rule with paths) and
    its tls entries' hosts."""
    spec = ingress.get("spec") or {}
    found: list[str] = []
    for rule in spec.get("rules") or []:
        host = host_key(rule.get("host"))
        if host or (rule.get("http") or {}).get("paths"):
            found.append(host)
    for tls in spec.get("tls") or []:
        found.extend(host_key(h) for h in tls.get("hosts") or [])
    return list(dict.fromkeys(found))


def certificate_hosts(ingress: Obj, names_of: NamesOf) -> list[str]:
    """The names an Ingress serves without naming them: its certificate's, for a tls entry
    without hosts. They are claimed too (else another namespace's catch-all would answer
    requests made under that certificate), but after every named claim: a wildcard
    certificate copied into many namespaces (reflector, kubed) takes no one's named host."""
    spec = ingress.get("spec") or {}
    namespace = str((ingress.get("metadata") or {}).get("namespace") or "default")
    found: list[str] = []
    for tls in spec.get("tls") or []:
        if not tls.get("hosts") and tls.get("secretName"):
            names = (host_key(n) for n in names_of(f"{namespace}/{tls['secretName']}"))
            found.extend(n for n in names if n)  # never the hostless '' from a certificate
    return list(dict.fromkeys(found))


def ingress_id(ingress: Obj) -> str:
    meta = ingress.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"


@dataclass(frozen=True)
class Refusal:
    """One name of one Ingress left out, and why (a Warning Event on that Ingress)."""

    ingress: str
    """namespace/name of the Ingress that lost."""
    host: str
    reason: str
    message: str


@dataclass
class HostOwners:
    """The namespace holding each claimed name, and the claims that lost."""

    owners: dict[str, str] = field(default_factory=dict)
    """Name → namespace."""
    holders: dict[str, str] = field(default_factory=dict)
    """Name → namespace/name of the Ingress whose claim won (for messages)."""
    refused: list[Refusal] = field(default_factory=list)

    @classmethod
    def of(cls, ingresses: Iterable[Obj], names_of: NamesOf = _no_names) -> HostOwners:
        claims = cls()
        ordered = oldest_first(ingresses)
        for ing in ordered:
            namespace = str((ing.get("metadata") or {}).get("namespace") or "default")
            for host in claimed_hosts(ing):
                claims._claim(ing, namespace, host)
        for ing in ordered:  # then what certificates serve unnamed, where nobody holds it
            namespace = str((ing.get("metadata") or {}).get("namespace") or "default")
            for host in certificate_hosts(ing, names_of):
                claims._claim(ing, namespace, host, named=False)
        return claims

    def _claim(self, ing: Obj, namespace: str, host: str, *, named: bool = True) -> None:
        for held in (host, covering_wildcard(host)):
            if held is None or held not in self.owners or self.owners[held] == namespace:
                continue
            if not named:
                return  # a certificate's unnamed name another holds: nothing to report
            shown = host or "(any host)"
            self.refused.append(
                Refusal(
                    ingress_id(ing),
                    host,
                    HOST_TAKEN,
                    f"host {shown} is held by namespace {self.owners[held]} "
                    f"(Ingress {self.holders[held]}, the older claim"
                    f"{'' if held == host else f' on {held}'}); "
                    "this Ingress's rules and tls entries for it are ignored",
                )
            )
            return
        if host not in self.owners:
            self.owners[host] = namespace
            self.holders[host] = ingress_id(ing)

    def owner(self, host: str) -> str | None:
        return self.owners.get(host)

    def allows(self, namespace: str, host: str) -> bool:
        """Whether ``namespace`` may route or bind ``host``: it holds the name, or nobody
        does and no other namespace holds a wildcard covering it."""
        owner = self.owners.get(host)
        if owner is not None:
            return owner == namespace
        wildcard = covering_wildcard(host)
        return wildcard is None or self.owners.get(wildcard, namespace) == namespace
