"""Host ownership: one tenant's Ingress never takes another tenant's host, path or SNI name.

The decision tests feed ``SnapshotBuilder.build`` two namespaces' Ingresses without a
cluster and read the route table and certificate bindings it publishes (what the workers
install); a hypothesis test draws Ingresses over overlapping names (exact, wildcard,
hostless) from three namespaces and checks the invariants for every name and path. End to
end, a second tenant on the real control plane lists the first tenant's host, with a real
certificate for it, and an extra path under it: ``openssl s_client`` still gets the first
tenant's certificate, curl its backend, and the second tenant's Ingress a Warning Event.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from devcluster.pki import Issued, TestPKI
from devcluster.responder import OpenSSLResponder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsp_stapler.ingress.claims import (
    HOST_NOT_IN_CERTIFICATE,
    HOST_TAKEN,
    certificate_covers,
    covering_wildcard,
)
from ocsp_stapler.ingress.routes import RouteTable, table_from_wire
from ocsp_stapler.ingress.snapshots import SnapshotBuilder
from ocsp_stapler.ingress.supervisor import self_signed_certificate
from ocsp_stapler.ingress.tls import CertificateStore
from ocsp_stapler.k8s.client import ApiClient
from support.backends import EchoBackend, expose, ingress_object, rule
from support.ingresses import StartIngress, curl, events_on_ingress, ingress_path, s_client
from support.kube import secret_path, tls_secret, wait_for

CLASSES = {
    "ocsp-stapler": {
        "metadata": {"name": "ocsp-stapler"},
        "spec": {"controller": "ocsp-stapler.dev/ingress"},
    }
}
FALLBACK = self_signed_certificate()
NAMES = ("shop.t", "api.shop.t", "*.shop.t", "other.t")
"""The names the leaves below are issued for (one DNS name each)."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def builder() -> SnapshotBuilder:
    return SnapshotBuilder(
        class_name="ocsp-stapler",
        controller="ocsp-stapler.dev/ingress",
        staple_key="tls.ocsp-staple",
        default_secret="",
        fallback_certificate=FALLBACK,
        clock=lambda: datetime.datetime.now(datetime.UTC),
    )


def ing(
    namespace: str,
    name: str,
    age: int,
    *,
    rules: list[dict[str, Any]] | None = None,
    tls: list[dict[str, Any]] | None = None,
    default_backend: str | None = None,
) -> dict[str, Any]:
    """An Ingress of our class created ``age`` seconds after the epoch of the test."""
    body = ingress_object(namespace, name, rules=rules or [], tls=tls)
    body["metadata"]["uid"] = f"uid-{namespace}-{name}"
    body["metadata"]["creationTimestamp"] = f"2026-12-01T00:{age // 60:02d}:{age % 60:02d}Z"
    if default_backend:
        body["spec"]["defaultBackend"] = {
            "service": {"name": default_backend, "port": {"name": "http"}}
        }
    return body


@pytest.fixture(scope="module")
def leaves(pki: TestPKI) -> dict[str, Issued]:
    return {name: pki.leaf(name) for name in NAMES}


def secret_of(pki: TestPKI, leaf: Issued) -> dict[str, Any]:
    return {"data": {"tls.crt": b64(pki.chain_pem(leaf)), "tls.key": b64(leaf.key_pem)}}


def build(
    b: SnapshotBuilder, ingresses: list[dict[str, Any]], secrets: dict[str, Any]
) -> dict[str, Any]:
    return b.build(
        ingresses={f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in ingresses},
        classes=CLASSES,
        services={},
        slices={},
        secrets=secrets,
    )


def routed(snapshot: dict[str, Any], host: str, path: str = "/") -> str | None:
    """namespace/service of the upstream a request goes to, as the workers will route it."""
    table: RouteTable = table_from_wire(json.loads(json.dumps(snapshot["routes"])))
    found = table.route(host, path)
    return found.name.split(":", 1)[0] if found else None


def sni(snapshot: dict[str, Any], host: str) -> str | None:
    """The Secret whose certificate a worker answers ``host``'s SNI with (None: default)."""
    store = CertificateStore()
    assert store.apply(snapshot["certs"], snapshot["default"], snapshot["unbound"]) == []
    entry = store.lookup(host.encode())
    return None if entry is None or entry.id == snapshot["default"] else entry.id


def refusals(b: SnapshotBuilder) -> set[tuple[str, str, str]]:
    return {(r.ingress, r.host, r.reason) for r in b.refusals}


# ------------------------------------------------------------------- the decisions


def test_a_younger_namespace_cannot_add_paths_or_its_certificate_to_a_held_host(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            ing(
                "a",
                "shop",
                1,
                rules=[rule("shop.t", "web")],
                tls=[{"hosts": ["shop.t"], "secretName": "shop"}],
            ),
            # b has a real certificate for shop.t, lists it and claims /admin under it.
            ing(
                "b",
                "steal",
                2,
                rules=[rule("shop.t", "thief", "/admin")],
                tls=[{"hosts": ["shop.t"], "secretName": "shop"}],
            ),
        ],
        {"a/shop": secret_of(pki, leaves["shop.t"]), "b/shop": secret_of(pki, leaves["shop.t"])},
    )
    assert routed(snapshot, "shop.t", "/admin") == "a/web"
    assert routed(snapshot, "shop.t", "/") == "a/web"
    assert sni(snapshot, "shop.t") == "a/shop"
    assert snapshot["certs"]["b/shop"]["hosts"] == []
    assert refusals(b) == {("b/steal", "shop.t", HOST_TAKEN)}
    message = b.refusals[0].message
    assert "namespace a" in message
    assert "a/shop" in message


def test_ingresses_of_one_namespace_merge_and_the_oldest_entry_binds(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            ing(
                "a",
                "zz-old",
                1,
                rules=[rule("shop.t", "web")],
                tls=[{"hosts": ["shop.t"], "secretName": "zz-first"}],
            ),
            ing(
                "a",
                "aa-new",
                2,
                rules=[rule("shop.t", "admin", "/admin")],
                tls=[{"hosts": ["shop.t"], "secretName": "aa-second"}],
            ),
        ],
        {
            "a/zz-first": secret_of(pki, leaves["shop.t"]),
            "a/aa-second": secret_of(pki, leaves["shop.t"]),
        },
    )
    assert routed(snapshot, "shop.t", "/admin/x") == "a/admin"
    assert routed(snapshot, "shop.t", "/") == "a/web"
    # The oldest Ingress's entry wins, not the Secret whose name sorts first.
    assert sni(snapshot, "shop.t") == "a/zz-first"
    assert refusals(b) == set()


def test_a_name_inside_another_namespaces_older_wildcard_is_refused(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            ing(
                "a",
                "wild",
                1,
                rules=[rule("*.shop.t", "web")],
                tls=[{"hosts": ["*.shop.t"], "secretName": "wild"}],
            ),
            ing(
                "b",
                "one",
                2,
                rules=[rule("api.shop.t", "thief")],
                tls=[{"hosts": ["api.shop.t"], "secretName": "api"}],
            ),
        ],
        {
            "a/wild": secret_of(pki, leaves["*.shop.t"]),
            "b/api": secret_of(pki, leaves["api.shop.t"]),
        },
    )
    assert routed(snapshot, "api.shop.t") == "a/web"
    assert sni(snapshot, "api.shop.t") == "a/wild"
    assert refusals(b) == {("b/one", "api.shop.t", HOST_TAKEN)}


def test_a_younger_wildcard_does_not_answer_for_a_name_held_elsewhere(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            # a holds api.shop.t without TLS of its own; b's younger wildcard certificate
            # must not answer for it (clients would take b's identity for a's host).
            ing("a", "api", 1, rules=[rule("api.shop.t", "api", "/v1")]),
            ing(
                "b",
                "wild",
                2,
                rules=[rule("*.shop.t", "web")],
                tls=[{"hosts": ["*.shop.t"], "secretName": "wild"}],
            ),
        ],
        {"b/wild": secret_of(pki, leaves["*.shop.t"])},
    )
    assert routed(snapshot, "api.shop.t", "/v1") == "a/api"
    assert routed(snapshot, "api.shop.t", "/other") is None  # not b's wildcard rules
    assert routed(snapshot, "x.shop.t") == "b/web"
    assert sni(snapshot, "api.shop.t") is None
    assert sni(snapshot, "x.shop.t") == "b/wild"
    assert snapshot["unbound"] == ["api.shop.t"]
    assert refusals(b) == set()


def test_another_namespaces_catch_all_gets_only_unheld_hosts(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            ing("a", "catch", 1, rules=[rule(None, "everything")], default_backend="fallback"),
            ing(
                "b",
                "shop",
                2,
                rules=[rule("shop.t", "web", "/app")],
                tls=[{"hosts": ["shop.t"], "secretName": "shop"}],
            ),
            ing("b", "tls-only", 3, tls=[{"hosts": ["other.t"], "secretName": "other"}]),
        ],
        {"b/shop": secret_of(pki, leaves["shop.t"]), "b/other": secret_of(pki, leaves["other.t"])},
    )
    assert routed(snapshot, "shop.t", "/app") == "b/web"
    assert routed(snapshot, "shop.t", "/elsewhere") is None  # not a's catch-all nor default
    assert routed(snapshot, "other.t", "/") is None  # held by b through its tls entry alone
    assert routed(snapshot, "unknown.t", "/") == "a/everything"
    assert sni(snapshot, "other.t") == "b/other"


def test_a_certificate_answers_only_for_names_it_covers(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    snapshot = build(
        b,
        [
            ing(
                "a",
                "liar",
                1,
                rules=[rule("other.t", "web")],
                tls=[{"hosts": ["other.t", "shop.t"], "secretName": "shop"}],
            ),
            ing("a", "own-names", 2, tls=[{"secretName": "api"}]),
        ],
        {"a/shop": secret_of(pki, leaves["shop.t"]), "a/api": secret_of(pki, leaves["api.shop.t"])},
    )
    assert snapshot["certs"]["a/shop"]["hosts"] == ["shop.t"]
    assert sni(snapshot, "other.t") is None
    assert refusals(b) == {("a/liar", "other.t", HOST_NOT_IN_CERTIFICATE)}
    # A tls entry without hosts binds its certificate's own names.
    assert snapshot["certs"]["a/api"]["hosts"] == ["api.shop.t"]
    assert sni(snapshot, "api.shop.t") == "a/api"


def test_names_a_certificate_serves_without_hosts_are_claimed_after_named_ones(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    """b serves *.shop.t from a tls entry without hosts: a's older catch-all and
    defaultBackend must not answer requests made under b's certificate; a name another
    namespace lists (c, younger) is c's, and b's certificate does not answer for it."""
    cluster = [
        ing("a", "catch", 1, rules=[rule(None, "phish")], default_backend="phish"),
        ing("b", "shop", 2, rules=[rule("api.shop.t", "api")], tls=[{"secretName": "wild"}]),
    ]
    secrets = {"b/wild": secret_of(pki, leaves["*.shop.t"])}
    b = builder()
    snapshot = build(b, cluster, secrets)
    assert sni(snapshot, "login.shop.t") == "b/wild"
    assert routed(snapshot, "login.shop.t") is None  # b's name, no path of b's: 404
    assert routed(snapshot, "api.shop.t") == "b/api"
    assert sni(snapshot, "api.shop.t") == "b/wild"
    assert routed(snapshot, "nobody.t") == "a/phish"
    assert refusals(b) == set()

    later = build(builder(), [*cluster, ing("c", "late", 3, rules=[rule("x.shop.t", "late")])],
                  secrets)  # fmt: skip
    assert routed(later, "x.shop.t") == "c/late"
    assert sni(later, "x.shop.t") is None  # the default certificate, not b's
    assert sni(later, "login.shop.t") == "b/wild"


def test_a_wildcard_certificate_copied_into_namespaces_serves_each_its_own_hosts(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    """reflector/kubed copy one *.shop.t Secret everywhere; each team lists only rules."""
    b = builder()
    snapshot = build(
        b,
        [
            ing("team-a", "a", 1, rules=[rule("api.shop.t", "a")], tls=[{"secretName": "wild"}]),
            ing("team-b", "b", 2, rules=[rule("x.shop.t", "b")], tls=[{"secretName": "wild"}]),
        ],
        {
            "team-a/wild": secret_of(pki, leaves["*.shop.t"]),
            "team-b/wild": secret_of(pki, leaves["*.shop.t"]),
        },
    )
    assert (routed(snapshot, "api.shop.t"), sni(snapshot, "api.shop.t")) == (
        "team-a/a",
        "team-a/wild",
    )
    assert (routed(snapshot, "x.shop.t"), sni(snapshot, "x.shop.t")) == ("team-b/b", "team-b/wild")
    assert sni(snapshot, "other.shop.t") == "team-a/wild"  # the oldest holds the wildcard
    assert refusals(b) == set()


def test_hosts_of_an_entry_a_worker_cannot_load_get_the_default_certificate(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    star = pki.leaf("*.t")
    snapshot = build(
        builder(),
        [
            ing(
                "a",
                "shop",
                1,
                rules=[rule("shop.t", "web")],
                tls=[{"hosts": ["shop.t"], "secretName": "shop"}],
            ),
            ing(
                "b",
                "wild",
                2,
                rules=[rule("*.t", "x")],
                tls=[{"hosts": ["*.t"], "secretName": "wild"}],
            ),
        ],
        {"a/shop": secret_of(pki, leaves["shop.t"]), "b/wild": secret_of(pki, star)},
    )
    snapshot["certs"]["a/shop"]["key"] = "not a key"  # whatever makes one worker fail it
    store = CertificateStore()
    assert store.apply(snapshot["certs"], snapshot["default"], snapshot["unbound"]) == ["a/shop"]
    assert store.lookup(b"shop.t") is store.default
    assert store.lookup(b"other.t") is store.entries["b/wild"]


def test_a_worker_follows_new_hosts_for_an_unchanged_certificate(
    pki: TestPKI, leaves: dict[str, Issued]
) -> None:
    b = builder()
    secrets = {"a/wild": secret_of(pki, leaves["*.shop.t"])}
    first = build(b, [ing("a", "w", 1, tls=[{"hosts": ["*.shop.t"], "secretName": "wild"}])],
                  secrets)  # fmt: skip
    store = CertificateStore()
    store.apply(first["certs"], first["default"], first["unbound"])
    assert store.lookup(b"x.shop.t") is store.entries["a/wild"]
    second = build(b, [ing("a", "w", 1, tls=[{"hosts": ["other.t"], "secretName": "wild"}])],
                   secrets)  # fmt: skip
    store.apply(second["certs"], second["default"], second["unbound"])
    assert store.lookup(b"x.shop.t") is not store.entries["a/wild"]


def test_names_and_coverage() -> None:
    assert covering_wildcard("a.b.t") == "*.b.t"
    assert covering_wildcard("*.b.t") is None
    assert covering_wildcard("localhost") is None
    assert covering_wildcard("") is None
    assert certificate_covers(["*.shop.t"], "api.shop.t")
    assert not certificate_covers(["*.shop.t"], "a.api.shop.t")
    assert not certificate_covers(["*.shop.t"], "shop.t")
    assert certificate_covers(["SHOP.T"], "shop.t")
    assert not certificate_covers(["api.shop.t"], "*.shop.t")


# ------------------------------------------------------ every draw keeps the invariants

HOSTS = ("shop.t", "api.shop.t", "*.shop.t", "other.t", "")
PATHS = ("/", "/admin", "/api")


@st.composite
def cluster_draw(draw: st.DrawFn) -> list[dict[str, Any]]:
    made = []
    for index in range(draw(st.integers(1, 7))):
        namespace = draw(st.sampled_from(("a", "b", "c")))
        rules = [
            rule(host or None, f"svc{index}", draw(st.sampled_from(PATHS)))
            for host in draw(st.lists(st.sampled_from(HOSTS), max_size=3))
        ]
        tls = [
            {
                "hosts": [h for h in draw(st.lists(st.sampled_from(HOSTS[:4]), max_size=2))],
                "secretName": draw(st.sampled_from(NAMES)).replace("*", "wild"),
            }
            for _ in range(draw(st.integers(0, 2)))
        ]
        default = f"svc{index}" if draw(st.booleans()) else None
        age = draw(st.integers(0, 5))
        made.append(ing(namespace, f"i{index}", age, rules=rules, tls=tls, default_backend=default))
    return made


def age(ingress: dict[str, Any]) -> tuple[str, str, str]:
    meta = ingress["metadata"]
    return meta["creationTimestamp"], meta["namespace"], meta["name"]


def first_claims(cluster: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, namespace, Ingress) for every name every Ingress mentions, oldest first: the
    test's own reading of the rule, not the module's."""
    found, unnamed = [], []
    for i in sorted(cluster, key=age):
        spec = i["spec"]
        names = [r.get("host", "") for r in spec.get("rules", [])]
        names += [h for t in spec.get("tls") or [] for h in t["hosts"]]
        found += [(name, i["metadata"]["namespace"], i) for name in names]
        # A tls entry without hosts serves its certificate's name (each leaf here has one:
        # its Secret's, with "wild" for "*"), claimed after every named claim.
        unnamed += [
            (t["secretName"].replace("wild", "*"), i["metadata"]["namespace"], i)
            for t in spec.get("tls") or []
            if not t["hosts"]
        ]
    return found + unnamed


def decider_of(claims: list[tuple[str, str, dict[str, Any]]], host: str) -> str | None:
    """The namespace of the oldest claim on ``host`` or on the wildcard covering it."""
    wildcard = "*" + host[host.find(".") :]
    return next((ns for name, ns, _ in claims if name in (host, wildcard)), None)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cluster=cluster_draw())
def test_every_name_is_routed_and_bound_by_its_oldest_claimant_only(
    pki: TestPKI, leaves: dict[str, Issued], cluster: list[dict[str, Any]]
) -> None:
    secrets = {
        f"{ns}/{name.replace('*', 'wild')}": secret_of(pki, leaf)
        for ns in ("a", "b", "c")
        for name, leaf in leaves.items()
    }
    snapshot = build(builder(), cluster, secrets)
    claims = first_claims(cluster)
    # A name nobody holds goes to the oldest hostless rule's or defaultBackend's namespace.
    hostless = next((ns for name, ns, _ in claims if name == ""), None)
    defaults = [i for i in sorted(cluster, key=age) if i["spec"].get("defaultBackend")]
    catch_alls = {hostless, defaults[0]["metadata"]["namespace"] if defaults else None}
    for host in ("shop.t", "api.shop.t", "x.shop.t", "other.t", "nobody.t"):
        decider = decider_of(claims, host)
        for path in PATHS:
            target = routed(snapshot, host, path)
            if target is None:
                continue
            allowed = {decider} if decider is not None else catch_alls
            assert target.split("/", 1)[0] in allowed, (host, path, target, decider)
        secret = sni(snapshot, host)
        if secret is not None:
            assert decider in (None, secret.split("/", 1)[0]), (host, secret, decider)
            names = snapshot["certs"][secret]["names"]
            assert certificate_covers(names, host), (host, secret, names)
        # And the holder is served: the oldest claim, a rule for "/", routes every path;
        # a tls entry of the oldest claimant naming the host with a certificate for it binds.
        first = next(((ns, i) for name, ns, i in claims if name == host), None)
        if first is None or first[0] != decider:
            continue
        oldest = first[1]
        if any(r.get("host") == host and r["http"]["paths"][0]["path"] == "/"
               for r in oldest["spec"]["rules"]):  # fmt: skip
            assert routed(snapshot, host, "/admin") is not None, (host, oldest)
        if any(host in t["hosts"] and certificate_covers([t["secretName"]], host)
               for t in oldest["spec"].get("tls") or []):  # fmt: skip
            assert sni(snapshot, host) is not None, (host, oldest)


# --------------------------------------------------------------------- end to end


async def test_another_tenant_cannot_take_a_host_on_the_control_plane(
    api: ApiClient,
    namespace: str,
    other_namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start: StartIngress,
) -> None:
    owner, thief = namespace, other_namespace
    web, stolen = await EchoBackend("web").start(), await EchoBackend("stolen").start()
    try:
        await expose(api, owner, "web", [web.port])
        await expose(api, thief, "stolen", [stolen.port])
        mine, theirs = pki.leaf("shop.example.test"), pki.leaf("shop.example.test")
        for ns, leaf in ((owner, mine), (thief, theirs)):
            await api.create(
                secret_path(ns), tls_secret("shop", ns, crt=pki.chain_pem(leaf), key=leaf.key_pem)
            )
        first = await api.create(
            ingress_path(owner),
            ingress_object(owner, "shop", rules=[rule("shop.example.test", "web")],
                           tls=[{"hosts": ["shop.example.test"], "secretName": "shop"}]),
        )  # fmt: skip
        ingress = await start(more_namespaces=(thief,))

        # The API's timestamps have whole seconds: the thief's Ingress must be younger.
        created = datetime.datetime.fromisoformat(first["metadata"]["creationTimestamp"])

        async def next_second() -> bool | None:
            return (
                datetime.datetime.now(datetime.UTC) >= created + datetime.timedelta(seconds=1)
                or None
            )

        await wait_for(next_second, what="a later second")
        await api.create(
            ingress_path(thief),
            ingress_object(thief, "steal", rules=[rule("shop.example.test", "stolen", "/admin")],
                           tls=[{"hosts": ["shop.example.test"], "secretName": "shop"}]),
        )  # fmt: skip

        async def refused() -> dict[str, Any] | None:
            for event in await events_on_ingress(api, thief, "steal"):
                if event["reason"] == HOST_TAKEN:
                    return event
            return None

        event = await wait_for(refused, what="the HostTaken Event")
        assert event["type"] == "Warning"
        assert f"namespace {owner}" in event["message"]
        got = await curl(ingress.https_port, "shop.example.test", "/admin", ca=pki.path("root"))
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["backend"] == "web"
        assert stolen.requests == 0
        out = await s_client(ingress.https_port, "shop.example.test")
        leaf_pem = mine.pem.decode().strip()
        assert leaf_pem in out
        assert theirs.pem.decode().strip() not in out
        metrics = await ingress.get("/metrics")
        assert metrics is not None
        assert 'ocsp_stapler_ingress_refused_hosts{reason="HostTaken"} 1.0' in metrics[1]
    finally:
        await web.stop()
        await stolen.stop()
