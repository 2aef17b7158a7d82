"""The chart's knobs (issue #16): each value rendered and asserted, the checks the schema and
the templates make refused with a message naming the value, every setting of the code reachable
from values, and every combination of values valid for the real API server."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import values_reference
import yaml
from devcluster.controlplane import ControlPlane
from test_chart import CHART, KUBE_VERSION, helm, render

from ocsp_stapler.cli import main
from ocsp_stapler.config import env_name
from ocsp_stapler.controller.running import LEASE_NAME
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.ingress.settings import IngressSettings

COMPONENTS = ("operator", "ingress")
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
Docs = list[dict[str, Any]]


def render_values(tmp_path: Path, values: dict[str, Any], *args: str) -> Docs:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return render("-f", str(path), *args)


def refused(tmp_path: Path, values: dict[str, Any]) -> str:
    """Rendering these values fails: helm's message."""
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = helm("template", "rel", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(path),
                check=False)  # fmt: skip
    assert proc.returncode != 0, f"rendered: {values}"
    return proc.stderr


def of(docs: Docs, kind: str, component: str | None = None) -> Docs:
    return [
        d for d in docs
        if d["kind"] == kind
        and component in (None, d["metadata"]["labels"].get("app.kubernetes.io/component"))
    ]  # fmt: skip


def deployment(docs: Docs, component: str) -> dict[str, Any]:
    (found,) = of(docs, "Deployment", component)
    return found


def pod_spec(docs: Docs, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(docs, component)["spec"]["template"]["spec"]
    return spec


def container(docs: Docs, component: str) -> dict[str, Any]:
    (found,) = pod_spec(docs, component)["containers"]
    return dict(found)


def env(docs: Docs, component: str) -> dict[str, dict[str, Any]]:
    entries = container(docs, component)["env"]
    by_name = {e["name"]: e for e in entries}
    assert len(by_name) == len(entries), "a variable is set twice"
    return by_name


def selector(docs: Docs, component: str) -> dict[str, str]:
    labels: dict[str, str] = deployment(docs, component)["spec"]["selector"]["matchLabels"]
    return labels


# --- names -------------------------------------------------------------------------------


def _named(docs: Docs) -> list[str]:
    """Names the chart derives from its full name (not the CRD's, not the IngressClass's)."""
    return [d["metadata"]["name"] for d in docs
            if d["kind"] not in ("CustomResourceDefinition", "IngressClass")]  # fmt: skip


def test_name_override_renames_objects_and_labels(tmp_path: Path) -> None:
    docs = render_values(tmp_path, {"nameOverride": "stapler"})
    assert {d["metadata"]["labels"]["app.kubernetes.io/name"] for d in docs} == {"stapler"}
    assert all(name.startswith("rel-stapler-") for name in _named(docs))
    for component in COMPONENTS:
        assert selector(docs, component)["app.kubernetes.io/name"] == "stapler"
        assert deployment(docs, component)["metadata"]["name"] == f"rel-stapler-{component}"
    assert "/nameOverride" in refused(tmp_path, {"nameOverride": "n" * 41})


def test_fullname_override_prefixes_every_name_and_is_truncated(tmp_path: Path) -> None:
    docs = render_values(tmp_path, {"fullnameOverride": "edge"})
    assert all(name.startswith("edge-") for name in _named(docs))
    assert deployment(docs, "operator")["metadata"]["name"] == "edge-operator"
    # 46 characters at most, a trailing "-" of the cut dropped: the longest Service name
    # (<fullname>-operator-metrics) is then 63, a DNS label's limit.
    long = "a" * 45 + "-" + "b" * 30
    docs = render_values(tmp_path, {"fullnameOverride": long, "serviceMonitor": {"enabled": True}})
    assert deployment(docs, "operator")["metadata"]["name"] == "a" * 45 + "-operator"
    assert all(name.startswith("a" * 45 + "-") and "b" not in name for name in _named(docs))
    services = [d["metadata"]["name"] for d in of(docs, "Service")]
    assert max(len(n) for n in services) <= 63
    docs = render_values(tmp_path, {"fullnameOverride": "c" * 60})
    assert max(len(n) for n in (d["metadata"]["name"] for d in of(docs, "Service"))) == 63


# --- pods ----------------------------------------------------------------------------------


def test_pod_labels_and_annotations_with_the_charts_labels_winning(tmp_path: Path) -> None:
    extra = {
        "team": "a",
        "app.kubernetes.io/component": "hijack",
        "app.kubernetes.io/instance": "x",
    }
    values = {c: {"podLabels": extra, "podAnnotations": {"note": c}} for c in COMPONENTS}
    docs = render_values(tmp_path, values)
    defaults = render()
    for component in COMPONENTS:
        meta = deployment(docs, component)["spec"]["template"]["metadata"]
        assert meta["labels"]["team"] == "a"
        assert meta["labels"].items() >= selector(docs, component).items()
        assert selector(docs, component) == selector(defaults, component)
        assert meta["annotations"] == {"note": component}
        assert "annotations" not in deployment(defaults, component)["spec"]["template"]["metadata"]


def test_priority_class_and_topology_spread_with_the_components_selector(tmp_path: Path) -> None:
    own = {"matchLabels": {"zone-group": "x"}}
    constraints = [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": own},
    ]  # fmt: skip
    values = {c: {"priorityClassName": f"{c}-high", "topologySpreadConstraints": constraints}
              for c in COMPONENTS}  # fmt: skip
    docs = render_values(tmp_path, values)
    for component in COMPONENTS:
        spec = pod_spec(docs, component)
        assert spec["priorityClassName"] == f"{component}-high"
        given, kept = spec["topologySpreadConstraints"]
        assert given == {
            **constraints[0],
            "labelSelector": {"matchLabels": selector(docs, component)},
        }
        assert kept == constraints[1]  # a selector of the user's own is left as it is
    for component in COMPONENTS:
        spec = pod_spec(render(), component)
        assert "priorityClassName" not in spec
        assert "topologySpreadConstraints" not in spec


def test_security_contexts_are_overridable(tmp_path: Path) -> None:
    """The defaults are values.yaml's (which the Pod Security "restricted" test renders); a
    value changes one key, and null drops one."""
    defaults = render()
    for component in COMPONENTS:
        values = DEFAULTS[component]
        assert pod_spec(defaults, component)["securityContext"] == values["podSecurityContext"]
        assert (
            container(defaults, component)["securityContext"]
            == (values["containerSecurityContext"])
        )
    values = {c: {"podSecurityContext": {"runAsUser": 20000, "fsGroup": None},
                  "containerSecurityContext": {"readOnlyRootFilesystem": False}}
              for c in COMPONENTS}  # fmt: skip
    docs = render_values(tmp_path, values)
    for component in COMPONENTS:
        pod = dict(DEFAULTS[component]["podSecurityContext"], runAsUser=20000)
        del pod["fsGroup"]
        assert pod_spec(docs, component)["securityContext"] == pod
        assert container(docs, component)["securityContext"] == dict(
            DEFAULTS[component]["containerSecurityContext"], readOnlyRootFilesystem=False
        )


# --- ServiceAccounts and what binds them -------------------------------------------------


def _bound(docs: Docs, component: str) -> list[dict[str, Any]]:
    subjects = []
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in of(docs, kind, component):
            subjects += binding["subjects"]
    return subjects


@pytest.mark.parametrize("watch", [[], ["team-a", "team-b"]], ids=["cluster", "namespaced"])
def test_service_accounts_are_named_annotated_and_bound(tmp_path: Path, watch: list[str]) -> None:
    values: dict[str, Any] = {
        "operator": {"watchNamespaces": watch,
                     "serviceAccount": {"name": "op-sa", "annotations": {"iam.example/role": "r"}}},
        "ingress": {"watchNamespaces": watch, "serviceAccount": {"name": "in-sa"}},
    }  # fmt: skip
    docs = render_values(tmp_path, values)
    accounts = {d["metadata"]["name"]: d for d in of(docs, "ServiceAccount")}
    assert sorted(accounts) == ["in-sa", "op-sa"]
    assert accounts["op-sa"]["metadata"]["annotations"] == {"iam.example/role": "r"}
    assert "annotations" not in accounts["in-sa"]["metadata"]
    assert all(a["metadata"]["namespace"] == "system" for a in accounts.values())
    # The operator: one binding per watched namespace (or the cluster), and the Lease's.
    expected = {"operator": max(len(watch), 1) + 1, "ingress": 1 + len(watch)}
    for component, name in (("operator", "op-sa"), ("ingress", "in-sa")):
        assert pod_spec(docs, component)["serviceAccountName"] == name
        subject = {"kind": "ServiceAccount", "name": name, "namespace": "system"}
        assert _bound(docs, component) == [subject] * expected[component]

    values["operator"]["serviceAccount"] = {"create": False, "name": "existing-op"}
    values["ingress"]["serviceAccount"] = {"create": False, "name": "existing-in"}
    docs = render_values(tmp_path, values)
    assert not of(docs, "ServiceAccount")
    for component in COMPONENTS:
        name = f"existing-{component[:2]}"
        assert pod_spec(docs, component)["serviceAccountName"] == name
        assert {s["name"] for s in _bound(docs, component)} == {name}


@pytest.mark.parametrize("component", COMPONENTS)
def test_an_existing_service_account_needs_its_name(tmp_path: Path, component: str) -> None:
    error = refused(tmp_path, {component: {"serviceAccount": {"create": False}}})
    assert f"/{component}/serviceAccount/name" in error


def test_default_service_accounts_are_the_components_full_names() -> None:
    docs = render()
    assert sorted(d["metadata"]["name"] for d in of(docs, "ServiceAccount")) == [
        "rel-ocsp-stapler-ingress",
        "rel-ocsp-stapler-operator",
    ]
    for component in COMPONENTS:
        name = f"rel-ocsp-stapler-{component}"
        assert pod_spec(docs, component)["serviceAccountName"] == name
        assert {s["name"] for s in _bound(docs, component)} == {name}


# --- env and args ----------------------------------------------------------------------------


def test_extra_env_is_appended_after_the_charts(tmp_path: Path) -> None:
    extra = [
        {"name": "OCSP_STAPLER_CERTID_HASH", "value": "sha256"},
        {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "url"}}},
    ]
    docs = render_values(tmp_path, {"operator": {"extraEnv": extra}})
    entries = container(docs, "operator")["env"]
    assert entries[-2:] == extra
    assert entries[:-2] == container(render(), "operator")["env"]
    assert all(set(e) <= {"name", "value", "valueFrom"} for e in entries)  # no "from" left


@pytest.mark.parametrize(
    ("component", "extra", "message"),
    [
        ("operator", ["OCSP_STAPLER_NAMESPACES"],
         "operator.extraEnv sets OCSP_STAPLER_NAMESPACES, which the chart sets from operator.watchNamespaces"),
        ("operator", ["OCSP_STAPLER_LEADER_ELECTION_NAMESPACE"],
         "operator.extraEnv sets OCSP_STAPLER_LEADER_ELECTION_NAMESPACE, which the chart sets from the pod's namespace"),
        ("operator", ["NO_PROXY"], "which the chart sets from operator.responder.noProxy"),
        ("ingress", ["OCSP_STAPLER_HTTPS_PORT"],
         "ingress.extraEnv sets OCSP_STAPLER_HTTPS_PORT, which the chart sets from the chart (fixed"),
        ("ingress", ["OCSP_STAPLER_MUST_STAPLE_POLICY"], "the chart sets from ingress.mustStaplePolicy"),
        ("operator", ["OCSP_STAPLER_CERTID_HASH", "OCSP_STAPLER_CERTID_HASH"],
         "operator.extraEnv gives OCSP_STAPLER_CERTID_HASH twice"),
    ],
)  # fmt: skip
def test_extra_env_colliding_with_the_chart_fails(
    tmp_path: Path, component: str, extra: list[str], message: str
) -> None:
    values = {component: {"extraEnv": [{"name": n, "value": "1"} for n in extra]}}
    assert message in refused(tmp_path, values)


def test_extra_args_are_appended_and_accepted_by_the_cli(tmp_path: Path) -> None:
    values = {"operator": {"extraArgs": ["-v"]}, "ingress": {"extraArgs": ["--bind-address=::"]}}
    docs = render_values(tmp_path, values)
    assert container(docs, "operator")["args"] == ["operator", "--all-namespaces", "-v"]
    assert container(docs, "ingress")["args"] == ["ingress", "--bind-address=::"]
    for component in COMPONENTS:
        command, *args = container(docs, component)["args"]
        with main.commands[command].make_context(command, list(args)):  # raises on a bad flag
            pass


@pytest.mark.parametrize(
    ("component", "args", "flag"),
    [("operator", ["--namespace=team-a"], "--namespace"), ("operator", ["--namespace", "a"], "--namespace"),
     ("operator", ["--all-namespaces"], "--all-namespaces"), ("operator", ["--log-format=plain"], "--log-format"),
     ("ingress", ["-v", "--https-port=9443"], "--https-port"), ("ingress", ["--http-port", "0"], "--http-port"),
     ("ingress", ["--health-port=1"], "--health-port"), ("ingress", ["--workers=4"], "--workers"),
     ("ingress", ["--namespace=a"], "--namespace"), ("ingress", ["--log-format", "plain"], "--log-format")],
)  # fmt: skip
def test_extra_args_setting_the_charts_flags_fail(
    tmp_path: Path, component: str, args: list[str], flag: str
) -> None:
    message = f"{component}.extraArgs: {flag} is set by the chart from its values"
    assert message in refused(tmp_path, {component: {"extraArgs": args}})


def test_every_setting_is_set_by_the_chart_or_documented_for_extra_env(tmp_path: Path) -> None:
    """Every OCSP_STAPLER_* variable the code reads (a field of its settings class) is either
    in the chart's env or named in the component's extraEnv documentation; a documented one
    is a real setting the chart leaves alone, and extraEnv accepts it."""
    reference = {name: text for name, _, text in values_reference.rows()}
    docs = render()
    for component, settings in (("operator", OperatorSettings), ("ingress", IngressSettings)):
        variables = {env_name(f.name) for f in dataclasses.fields(settings)}
        chart = {n for n in env(docs, component) if n.startswith("OCSP_STAPLER_")}
        documented = set(re.findall(r"OCSP_STAPLER_[A-Z_]+", reference[f"{component}.extraEnv"]))
        assert not variables - chart - documented, f"{component}: not reachable from values"
        assert chart <= variables, f"{component}: the chart sets a variable no setting reads"
        assert documented <= variables, f"{component}.extraEnv documents an unknown variable"
        assert not documented & chart, f"{component}.extraEnv documents what the chart sets"
        extra = [{"name": n, "value": "1"} for n in sorted(documented)]
        set_by_extra = env(render_values(tmp_path, {component: {"extraEnv": extra}}), component)
        assert documented <= set(set_by_extra)


# --- leader election -------------------------------------------------------------------------


def _lease_roles(docs: Docs) -> Docs:
    return [d for d in of(docs, "Role", "operator")
            if any("leases" in r["resources"] for r in d["rules"])]  # fmt: skip


def test_leader_election_rolls_and_gets_its_lease_in_the_release_namespace(tmp_path: Path) -> None:
    docs = render_values(tmp_path, {"operator": {"watchNamespaces": ["team-a"]}})
    spec = deployment(docs, "operator")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    variables = env(docs, "operator")
    assert variables["OCSP_STAPLER_LEADER_ELECTION"]["value"] == "true"
    assert variables["OCSP_STAPLER_LEADER_ELECTION_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    (role,) = _lease_roles(docs)
    assert role["metadata"]["namespace"] == "system"
    assert [r for r in role["rules"] if r["apiGroups"] != ["coordination.k8s.io"]] == []
    by_verbs = {tuple(r["verbs"]): r.get("resourceNames") for r in role["rules"]}
    assert by_verbs == {("create",): None, ("get", "list", "watch", "update"): [LEASE_NAME]}
    (binding,) = [
        b
        for b in of(docs, "RoleBinding", "operator")
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    assert binding["metadata"]["namespace"] == "system"
    timing = {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20, "retryPeriodSeconds": 4}
    variables = env(render_values(tmp_path, {"operator": {"leaderElection": timing}}), "operator")
    assert [variables[f"OCSP_STAPLER_{n}_SECONDS"]["value"] for n in ("LEASE_DURATION", "RENEW_DEADLINE",
            "RETRY_PERIOD")] == ["30", "20", "4"]  # fmt: skip


def test_without_leader_election_one_replica_recreated_and_no_lease_role(tmp_path: Path) -> None:
    docs = render_values(
        tmp_path, {"operator": {"replicas": 1, "leaderElection": {"enabled": False}}}
    )
    spec = deployment(docs, "operator")["spec"]
    assert (spec["replicas"], spec["strategy"]) == (1, {"type": "Recreate"})
    assert env(docs, "operator")["OCSP_STAPLER_LEADER_ELECTION"]["value"] == "false"
    assert not _lease_roles(docs)
    assert len(of(docs, "RoleBinding", "operator")) == 0
    error = refused(tmp_path, {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}})
    assert "/operator/replicas" in error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"leaderElection": {"retryPeriodSeconds": 10}},
         "operator.leaderElection needs retryPeriodSeconds (10) < renewDeadlineSeconds (10) < leaseDurationSeconds (15)"),
        ({"leaderElection": {"renewDeadlineSeconds": 15}}, "renewDeadlineSeconds (15) < leaseDurationSeconds (15)"),
        ({"leaderElection": {"leaseDurationSeconds": 5}}, "renewDeadlineSeconds (10) < leaseDurationSeconds (5)"),
        ({"responder": {"attemptTimeoutSeconds": 5}},
         "operator.responder.attemptTimeoutSeconds (5) is below operator.responder.timeoutSeconds (10)"),
        ({"leaderElection": {"retryPeriodSeconds": 0}}, "/operator/leaderElection/retryPeriodSeconds"),
        ({"leaderElection": {"renewDeadlineSeconds": 3}},
         "operator.leaderElection.renewDeadlineSeconds (3) must exceed retryPeriodSeconds (2) by more than 1 s"),
    ],
)  # fmt: skip
def test_values_the_operator_would_refuse_fail_rendering(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in refused(tmp_path, {"operator": values})


def test_the_validate_bounds_are_inclusive_where_the_operators_are(tmp_path: Path) -> None:
    values = {"operator": {"responder": {"timeoutSeconds": 10, "attemptTimeoutSeconds": 10},
                           "leaderElection": {"retryPeriodSeconds": 8.9}}}  # fmt: skip
    variables = env(render_values(tmp_path, values), "operator")
    assert variables["OCSP_STAPLER_ATTEMPT_TIMEOUT_SECONDS"]["value"] == "10"
    assert variables["OCSP_STAPLER_RETRY_PERIOD_SECONDS"]["value"] == "8.9"


def test_the_ingress_shuts_down_within_its_grace_period(tmp_path: Path) -> None:
    docs = render_values(tmp_path, {})
    variables = env(docs, "ingress")
    assert variables["OCSP_STAPLER_SHUTDOWN_DELAY_SECONDS"]["value"] == "5"
    assert variables["OCSP_STAPLER_DRAIN_TIMEOUT_SECONDS"]["value"] == "20"
    assert pod_spec(docs, "ingress")["terminationGracePeriodSeconds"] == 30
    values = {"ingress": {"shutdownDelaySeconds": 10, "drainTimeoutSeconds": 40,
                          "terminationGracePeriodSeconds": 55}}  # fmt: skip
    docs = render_values(tmp_path, values)
    assert env(docs, "ingress")["OCSP_STAPLER_SHUTDOWN_DELAY_SECONDS"]["value"] == "10"
    assert pod_spec(docs, "ingress")["terminationGracePeriodSeconds"] == 55
    message = refused(tmp_path, {"ingress": {"shutdownDelaySeconds": 10}})
    assert "ingress.terminationGracePeriodSeconds (30) is below shutdownDelaySeconds + " \
        "drainTimeoutSeconds + 5 (35)" in message  # fmt: skip
    assert "/ingress/shutdownDelaySeconds" in refused(
        tmp_path, {"ingress": {"shutdownDelaySeconds": -1}}
    )


# --- PodDisruptionBudgets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"operator": {"maxUnavailable": 1}, "ingress": {"maxUnavailable": 1}}),
        ({"operator": {"replicas": 1}}, {"ingress": {"maxUnavailable": 1}}),
        ({"operator": {"replicas": 1}, "ingress": {"replicas": 1}}, {}),
        ({"ingress": {"enabled": False}}, {"operator": {"maxUnavailable": 1}}),
        ({"operator": {"podDisruptionBudget": {"enabled": False}}}, {"ingress": {"maxUnavailable": 1}}),
        ({"operator": {"replicas": 3, "podDisruptionBudget": {"minAvailable": 2}},
          "ingress": {"podDisruptionBudget": {"maxUnavailable": "50%"}}},
         {"operator": {"minAvailable": 2}, "ingress": {"maxUnavailable": "50%"}}),
        ({"ingress": {"podDisruptionBudget": {"minAvailable": "50%"}}},
         {"operator": {"maxUnavailable": 1}, "ingress": {"minAvailable": "50%"}}),
    ],
)  # fmt: skip
def test_pod_disruption_budgets_only_with_more_than_one_replica(
    tmp_path: Path, values: dict[str, Any], expected: dict[str, dict[str, Any]]
) -> None:
    docs = render_values(tmp_path, values)
    budgets = {b["metadata"]["labels"]["app.kubernetes.io/component"]: b
               for b in of(docs, "PodDisruptionBudget")}  # fmt: skip
    assert sorted(budgets) == sorted(expected)
    for component, budget in budgets.items():
        assert budget["metadata"]["namespace"] == "system"
        spec = dict(budget["spec"])
        assert spec.pop("selector") == {"matchLabels": selector(docs, component)}
        assert spec == expected[component]


# --- the ingress Service ---------------------------------------------------------------------


def _ingress_service(docs: Docs) -> dict[str, Any]:
    (found,) = [
        s for s in of(docs, "Service", "ingress") if not s["metadata"]["name"].endswith("-metrics")
    ]
    return found


def test_ingress_service_fields(tmp_path: Path) -> None:
    default = _ingress_service(render())
    assert default["spec"]["type"] == "LoadBalancer"
    assert "annotations" not in default["metadata"]
    assert not {"externalTrafficPolicy", "loadBalancerClass"} & set(default["spec"])
    service = {"annotations": {"lb.example/internal": "true"}, "externalTrafficPolicy": "Local",
               "loadBalancerClass": "example.com/internal"}  # fmt: skip
    docs = render_values(tmp_path, {"ingress": {"service": service}})
    got = _ingress_service(docs)
    assert got["metadata"]["annotations"] == {"lb.example/internal": "true"}
    assert (got["spec"]["externalTrafficPolicy"], got["spec"]["loadBalancerClass"]) == (
        "Local", "example.com/internal"
    )  # fmt: skip
    metrics = [s for s in of(docs, "Service", "ingress") if s is not got]
    assert all("annotations" not in s["metadata"] for s in metrics)
    node_port = {"type": "NodePort", "externalTrafficPolicy": "Local"}
    got = _ingress_service(render_values(tmp_path, {"ingress": {"service": node_port}}))
    assert (got["spec"]["type"], got["spec"]["externalTrafficPolicy"]) == ("NodePort", "Local")


@pytest.mark.parametrize(
    ("service", "message"),
    [({"type": "ClusterIP", "externalTrafficPolicy": "Local"}, "/ingress/service/externalTrafficPolicy"),
     ({"type": "ClusterIP", "externalTrafficPolicy": "Cluster"}, "/ingress/service/externalTrafficPolicy"),
     ({"type": "NodePort", "loadBalancerClass": "example.com/lb"}, "/ingress/service/loadBalancerClass"),
     ({"type": "ClusterIP", "loadBalancerClass": "example.com/lb"}, "/ingress/service/loadBalancerClass"),
     ({"externalTrafficPolicy": "Nearest"}, "/ingress/service/externalTrafficPolicy")],
)  # fmt: skip
def test_ingress_service_fields_need_their_type(
    tmp_path: Path, service: dict[str, str], message: str
) -> None:
    assert message in refused(tmp_path, {"ingress": {"service": service}})


# --- ServiceMonitor --------------------------------------------------------------------------


def test_service_monitor_fields(tmp_path: Path) -> None:
    relabel = [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}]
    metric_relabel = [{"action": "drop", "sourceLabels": ["__name__"], "regex": "python_gc_.*"}]
    values = {"serviceMonitor": {"enabled": True, "namespace": "monitoring", "scrapeTimeout": "10s",
                                 "relabelings": relabel, "metricRelabelings": metric_relabel,
                                 "labels": {"release": "prom"}}}  # fmt: skip
    monitors = of(render_values(tmp_path, values), "ServiceMonitor")
    assert sorted(m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors) == [
        "ingress", "operator"
    ]  # fmt: skip
    for m in monitors:
        assert (m["metadata"]["namespace"], m["metadata"]["labels"]["release"]) == (
            "monitoring",
            "prom",
        )
        assert m["spec"]["namespaceSelector"] == {"matchNames": ["system"]}
        assert m["spec"]["endpoints"] == [{"port": "metrics", "interval": "60s", "scrapeTimeout": "10s",
                                           "relabelings": relabel, "metricRelabelings": metric_relabel}]  # fmt: skip
    for namespace in ("", "system"):  # the release namespace: no selector needed
        values = {"serviceMonitor": {"enabled": True, "namespace": namespace}}
        for m in of(render_values(tmp_path, values), "ServiceMonitor"):
            assert m["metadata"]["namespace"] == "system"
            assert "namespaceSelector" not in m["spec"]
            assert m["spec"]["endpoints"] == [{"port": "metrics", "interval": "60s"}]
    assert not of(render(), "ServiceMonitor")


@pytest.mark.parametrize(
    ("values", "message"),
    [({"scrapeTimeout": "10"}, "/serviceMonitor/scrapeTimeout"),
     ({"namespace": "Monitoring"}, "/serviceMonitor/namespace"),
     ({"relabelings": {"action": "drop"}}, "/serviceMonitor/relabelings")],
)  # fmt: skip
def test_service_monitor_values_are_checked(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    assert message in refused(tmp_path, {"serviceMonitor": {"enabled": True, **values}})


# --- every combination, against the real API server -----------------------------------------

COMBINATIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "defaults": lambda other: {},
    "watch-namespaces": lambda other: {
        "operator": {"watchNamespaces": [other]}, "ingress": {"watchNamespaces": [other]}
    },
    "no-leader-election": lambda other: {"operator": {"replicas": 1, "leaderElection": {"enabled": False}}},
    "no-ingress": lambda other: {"ingress": {"enabled": False}},
    "monitoring": lambda other: {
        "serviceMonitor": {"enabled": True, "scrapeTimeout": "10s",
                           "relabelings": [{"action": "replace", "targetLabel": "x", "replacement": "eu-1"}]},
        "prometheusRule": {"enabled": True},
    },
    "no-crds": lambda other: {"crds": {"enabled": False}},
    "existing-service-accounts": lambda other: {
        "operator": {"serviceAccount": {"create": False, "name": "op"}},
        "ingress": {"serviceAccount": {"create": False, "name": "in"}},
    },
    "every-knob": lambda other: {
        "fullnameOverride": "edge",
        "operator": {
            "replicas": 3, "podDisruptionBudget": {"minAvailable": "50%"},
            "serviceAccount": {"name": "op", "annotations": {"iam.example/role": "r"}},
            "podLabels": {"team": "a"}, "podAnnotations": {"note": "kept"}, "priorityClassName": "high",
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                           "whenUnsatisfiable": "ScheduleAnyway"}],
            "extraEnv": [{"name": "OCSP_STAPLER_CERTID_HASH", "value": "sha256"},
                         {"name": "HTTPS_PROXY", "valueFrom": {"secretKeyRef": {"name": "p", "key": "u"}}}],
            "extraArgs": ["-v"], "containerSecurityContext": {"readOnlyRootFilesystem": True},
        },
        "ingress": {
            "service": {"annotations": {"lb.example/internal": "true"}, "externalTrafficPolicy": "Local",
                        "loadBalancerClass": "example.com/internal"},
            "podDisruptionBudget": {"maxUnavailable": "25%"},
            "extraEnv": [{"name": "OCSP_STAPLER_MAX_CONNECTIONS", "value": "5000"}],
        },
    },
}  # fmt: skip

# The Prometheus Operator's kinds: their CRDs are not in the test cluster (and are large), so
# the dry run leaves exactly these out; the tests above check their fields.
NOT_IN_THE_CLUSTER = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_combination_lints_and_the_api_server_accepts_it(
    cluster: ControlPlane, namespace: str, other_namespace: str, tmp_path: Path, combination: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(COMBINATIONS[combination](other_namespace)))
    lint = helm("lint", "--strict", str(CHART), "-f", str(values)).stdout
    assert "0 chart(s) failed" in lint, lint
    docs = render("--namespace", namespace, "-f", str(values))
    checked = [d for d in docs if d["kind"] not in NOT_IN_THE_CLUSTER]
    if combination == "monitoring":
        assert {d["kind"] for d in docs} - {d["kind"] for d in checked} >= {"ServiceMonitor"}
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(checked))
    out = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(manifest))
    assert out.count("(server dry run)") == len(checked), out
