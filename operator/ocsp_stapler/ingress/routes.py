"""Routing for the bundled ingress: from Ingress, Service and EndpointSlice objects to a table
that answers "which endpoints serve this host and path?". Pure code over plain dicts.

Kubernetes Ingress semantics (networking.k8s.io/v1):

* hosts match exactly, or by a wildcard ``*.example.com`` that covers exactly one more label;
  an exact host beats a wildcard, a wildcard beats a rule without host;
* path types: ``Exact`` (the whole path), ``Prefix`` (by ``/``-separated elements: ``/foo``
  matches ``/foo`` and ``/foo/bar`` but not ``/foobar``); ``ImplementationSpecific`` is
  treated as ``Prefix``; the longest match wins, and ``Exact`` wins a tie;
* a host belongs to one namespace (``claims``: the oldest claim wins); when none of its
  paths match, a request falls through to a wildcard, the hostless rules or the default
  backend only if they belong to that namespace too, so no tenant's catch-all receives
  another tenant's traffic;
* traffic goes to the *ready* endpoints of the backend Service's EndpointSlices, round-robin,
  never to the ClusterIP (so it works without kube-proxy, and with selector-less Services).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ocsp_stapler.ingress.claims import HostOwners, host_key, oldest_first

Obj = Mapping[str, Any]

INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int


@dataclass
class ServiceBackend:
    """An Ingress backend (one Service port) as the ready endpoints that serve it, chosen
    round-robin."""

    name: str
    """namespace/service:port, for logs and metrics."""
    endpoints: tuple[Endpoint, ...]
    _turn: int = 0

    def next_endpoint(self) -> Endpoint | None:
        if not self.endpoints:
            return None
        endpoint = self.endpoints[self._turn % len(self.endpoints)]
        self._turn += 1
        return endpoint


@dataclass(frozen=True)
class PathRule:
    path: str
    exact: bool
    backend_key: str

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.path
        if self.path in ("", "/"):
            return True
        base = self.path.rstrip("/")
        return path == base or path.startswith(base + "/")


@dataclass
class HostRules:
    rules: list[PathRule] = field(default_factory=list)
    namespace: str | None = None
    """The namespace the host belongs to (None: nobody's, e.g. no hostless rule)."""

    def add(self, rule: PathRule) -> None:
        self.rules.append(rule)
        # Longest path first; Exact before Prefix on equal length.
        self.rules.sort(key=lambda r: (-len(r.path.rstrip("/") or "/"), not r.exact))

    def match(self, path: str) -> PathRule | None:
        for rule in self.rules:
            if rule.matches(path):
                return rule
        return None


@dataclass
class RouteTable:
    exact: dict[str, HostRules] = field(default_factory=dict)
    wildcard: dict[str, HostRules] = field(default_factory=dict)
    """Keyed by the suffix after '*', e.g. '.example.com'."""
    anyhost: HostRules = field(default_factory=HostRules)
    default_backend: str | None = None
    default_namespace: str | None = None
    backends: dict[str, ServiceBackend] = field(default_factory=dict)
    _seen: dict[tuple[bytes, bytes], ServiceBackend | None] = field(
        default_factory=dict, repr=False, compare=False
    )
    """route_raw's answers by (Host, path): a table never changes once built (a new
    configuration is a new table), so they stay right for its whole life."""

    def rules_for(self, host: str) -> HostRules:
        """The entry of a host as claimed: '' (hostless), '*.example.com' or exact."""
        if not host:
            return self.anyhost
        if host.startswith("*."):
            return self.wildcard.setdefault(host[1:], HostRules())
        return self.exact.setdefault(host, HostRules())

    def hosts(self, host: str) -> list[HostRules]:
        """Candidate rule sets for a host, most specific first."""
        found = []
        if host in self.exact:
            found.append(self.exact[host])
        dot = host.find(".")
        if dot > 0 and host[dot:] in self.wildcard:
            found.append(self.wildcard[host[dot:]])
        found.append(self.anyhost)
        return found

    def route_raw(self, host: bytes, target: bytes) -> ServiceBackend | None:
        """``route`` for a request's Host and target as received, remembered per path."""
        query = target.find(b"?")
        key = (host, target if query < 0 else target[:query])
        try:
            return self._seen[key]
        except KeyError:
            pass
        found = self.route(host.decode("latin-1"), key[1].decode("latin-1"))
        if len(self._seen) >= 4096:
            self._seen.clear()
        self._seen[key] = found
        return found

    def route(self, host: str, path: str) -> ServiceBackend | None:
        """The backend for a request, or None (404)."""
        host = host.split(":", 1)[0].lower().rstrip(".")
        path = path.split("?", 1)[0] or "/"
        held, owner = False, None
        for rules in self.hosts(host):
            if not rules.rules and rules.namespace is None:
                continue  # an empty catch-all
            if not held:
                held, owner = True, rules.namespace  # the most specific holder decides
            elif rules.namespace != owner:
                continue
            rule = rules.match(path)
            if rule is not None:
                return self.backends.get(rule.backend_key)
        if self.default_backend is not None and (not held or owner == self.default_namespace):
            return self.backends.get(self.default_backend)
        return None


def ingress_class_of(ingress: Obj) -> str | None:
    spec = ingress.get("spec") or {}
    name = spec.get("ingressClassName")
    if name:
        return str(name)
    legacy = (ingress.get("metadata") or {}).get("annotations", {}).get(INGRESS_CLASS_ANNOTATION)
    return str(legacy) if legacy else None


def ours(ingress: Obj, *, class_name: str, is_default_class: bool) -> bool:
    cls = ingress_class_of(ingress)
    return cls == class_name or (cls is None and is_default_class)


def _service_port(service: Obj | None, port_ref: Mapping[str, Any]) -> str | None:
    """The name of the Service port an Ingress backend names (EndpointSlice ports use it)."""
    for port in ((service or {}).get("spec") or {}).get("ports", []):
        if ("name" in port_ref and port.get("name") == port_ref["name"]) or (
            "number" in port_ref and port.get("port") == port_ref["number"]
        ):
            return str(port["name"]) if port.get("name") else None
    return None


def ready_endpoints(slices: Iterable[Obj], port_name: str | None) -> tuple[Endpoint, ...]:
    """Ready addresses of a Service's EndpointSlices, on the slice port named ``port_name``."""
    found: list[Endpoint] = []
    seen: set[Endpoint] = set()
    for eps in slices:
        ports = [
            p for p in eps.get("ports") or [] if (p.get("name") or None) == (port_name or None)
        ]
        if not ports or ports[0].get("port") is None:
            continue
        number = int(ports[0]["port"])
        for ep in eps.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for address in ep.get("addresses") or []:
                endpoint = Endpoint(address=str(address), port=number)
                if endpoint not in seen:
                    seen.add(endpoint)
                    found.append(endpoint)
    return tuple(found)


@dataclass
class ClusterView:
    """The objects the route table is built from, keyed by namespace/name."""

    ingresses: dict[str, Obj] = field(default_factory=dict)
    services: dict[str, Obj] = field(default_factory=dict)
    slices: dict[str, Obj] = field(default_factory=dict)

    def slices_of(self, namespace: str, service: str) -> list[Obj]:
        return [
            s
            for s in self.slices.values()
            if s["metadata"].get("namespace") == namespace
            and (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == service
        ]


def _backend_key(view: ClusterView, namespace: str, backend: Obj, table: RouteTable) -> str | None:
    """The key of the ServiceBackend an Ingress backend names (added to ``table`` when new);
    None for a resource backend."""
    service_ref = backend.get("service")
    if not service_ref:
        return None  # resource backends are not supported
    name = str(service_ref.get("name", ""))
    port_ref = service_ref.get("port") or {}
    service = view.services.get(f"{namespace}/{name}")
    port_name = _service_port(service, port_ref)
    key = f"{namespace}/{name}:{port_ref.get('name') or port_ref.get('number')}"
    if key not in table.backends:
        endpoints = ready_endpoints(view.slices_of(namespace, name), port_name) if service else ()
        table.backends[key] = ServiceBackend(name=key, endpoints=endpoints)
    return key


def build_table(
    view: ClusterView, ingresses: Iterable[Obj], owners: HostOwners | None = None
) -> RouteTable:
    """The route table for our Ingresses (oldest first, so the first claim on a path wins);
    a rule for a host another namespace holds is left out (``owners``, computed from these
    Ingresses when not given)."""
    ordered = oldest_first(ingresses)
    owners = owners if owners is not None else HostOwners.of(ordered)
    table = RouteTable()
    for host, namespace in owners.owners.items():
        # Every held name gets its entry, paths or not: a host named only in spec.tls
        # still belongs to its namespace, and nobody else's catch-all answers for it.
        table.rules_for(host).namespace = namespace
    for ing in ordered:
        namespace = ing["metadata"].get("namespace", "default")
        spec = ing.get("spec") or {}
        if spec.get("defaultBackend") and table.default_backend is None:
            table.default_backend = _backend_key(view, namespace, spec["defaultBackend"], table)
            table.default_namespace = namespace
        for rule in spec.get("rules") or []:
            host = host_key(rule.get("host"))
            if owners.owner(host) != namespace:
                continue  # held by another namespace (or, without paths, claimed by none)
            rules = table.rules_for(host)
            for p in (rule.get("http") or {}).get("paths") or []:
                key = _backend_key(view, namespace, p.get("backend") or {}, table)
                if key is None:
                    continue
                path = str(p.get("path") or "/")
                rules.add(PathRule(path=path, exact=p.get("pathType") == "Exact", backend_key=key))
    return table


@dataclass(frozen=True)
class TLSBinding:
    """A Secret that serves the listed hosts (from an Ingress's spec.tls)."""

    secret: str
    """namespace/name"""
    hosts: tuple[str, ...]
    """As listed; empty: the certificate's own names."""
    ingress: str = ""
    """namespace/name of the Ingress that lists it."""


def tls_bindings(ingresses: Iterable[Obj]) -> list[TLSBinding]:
    """The tls entries of these Ingresses, oldest Ingress first."""
    found = []
    for ing in oldest_first(ingresses):
        namespace = ing["metadata"].get("namespace", "default")
        for tls in (ing.get("spec") or {}).get("tls") or []:
            secret = tls.get("secretName")
            if secret:
                hosts = tuple(dict.fromkeys(host_key(h) for h in tls.get("hosts") or []))
                found.append(
                    TLSBinding(
                        secret=f"{namespace}/{secret}",
                        hosts=hosts,
                        ingress=f"{namespace}/{ing['metadata'].get('name', '')}",
                    )
                )
    return found


def table_to_wire(table: RouteTable) -> dict[str, Any]:
    """A JSON-able form, sent from the supervisor to the workers."""

    def rules(h: HostRules) -> dict[str, Any]:
        return {
            "namespace": h.namespace,
            "rules": [[r.path, r.exact, r.backend_key] for r in h.rules],
        }

    return {
        "exact": {k: rules(v) for k, v in table.exact.items()},
        "wildcard": {k: rules(v) for k, v in table.wildcard.items()},
        "anyhost": rules(table.anyhost),
        "default": table.default_backend,
        "default_namespace": table.default_namespace,
        "backends": {
            k: [[e.address, e.port] for e in b.endpoints] for k, b in table.backends.items()
        },
    }


def table_from_wire(wire: Mapping[str, Any]) -> RouteTable:
    def rules(entry: Mapping[str, Any]) -> HostRules:
        h = HostRules(namespace=entry["namespace"])
        for path, exact, key in entry["rules"]:
            h.add(PathRule(path=path, exact=exact, backend_key=key))
        return h

    return RouteTable(
        exact={k: rules(v) for k, v in wire["exact"].items()},
        wildcard={k: rules(v) for k, v in wire["wildcard"].items()},
        anyhost=rules(wire["anyhost"]),
        default_backend=wire["default"],
        default_namespace=wire["default_namespace"],
        backends={
            k: ServiceBackend(name=k, endpoints=tuple(Endpoint(a, p) for a, p in v))
            for k, v in wire["backends"].items()
        },
    )
