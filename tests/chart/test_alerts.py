"""The chart's alerts (files/prometheus-rules.yaml) with the real promtool, built from its Go
module by hack/controlplane/build.sh: the rules are valid, the unit tests in alerts/ pin each
alert firing and staying quiet, a changed rule fails them, the PrometheusRule the chart renders
carries the file unchanged, and every metric the rules read is one the operator exports."""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from devcluster.controlplane import bin_dir
from prometheus_client.parser import text_string_to_metric_families
from test_chart import CHART, render

from ocsp_stapler.controller.bodies import SecretRef
from ocsp_stapler.controller.metrics import Metrics

RULES = CHART / "files" / "prometheus-rules.yaml"
ALERT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.yaml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = bin_dir() / "promtool"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make binaries` (hack/controlplane/build.sh)")
    return subprocess.run(
        [str(path), *args], capture_output=True, text=True, timeout=120, check=False
    )


def copies_against(rules_text: str, tmp_path: Path) -> list[str]:
    """The alert tests, copied into tmp_path to read ``rules_text`` instead of the chart's."""
    (tmp_path / "rules.yaml").write_text(rules_text)
    copies = []
    for path in ALERT_TESTS:
        doc = yaml.safe_load(path.read_text())
        doc["rule_files"] = ["rules.yaml"]
        (tmp_path / path.name).write_text(yaml.safe_dump(doc, allow_unicode=True))
        copies.append(str(tmp_path / path.name))
    return copies


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules())} rules found" in proc.stdout


def test_the_alert_unit_tests_pass() -> None:
    assert ALERT_TESTS, "no promtool test files in tests/chart/alerts"
    proc = promtool("test", "rules", *map(str, ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in ALERT_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert [(path.parent / f).resolve() for f in doc["rule_files"]] == [RULES.resolve()]
        for case in doc["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"


# Each a change to one rule that its unit tests must catch: (rule text, the change).
MUTATIONS = {
    "expiry-threshold": ("< 30 * 60", "< 20 * 60"),
    "expiry-ignores-scheduled-refresh": (
        "(ocsp_stapler_staple_refresh_timestamp_seconds > time())",
        "(ocsp_stapler_staple_refresh_timestamp_seconds > time() + 86400)",
    ),
    "failing-for": ("for: 15m", "for: 10m"),
    "failing-misses-noresponder": ('status=~"Error|NoResponder"', 'status="Error"'),
    "revoked-value": ('status="revoked"', 'status="Revoked"'),
    "revoked-summary": ("is revoked\n", "was revoked\n"),
    "absent-for": ("for: 10m", "for: 5m"),
    "no-leader-for": ("for: 2m", "for: 1m"),
    "split-threshold": ("(ocsp_stapler_leader) > 1", "(ocsp_stapler_leader) > 0"),
}


def test_the_copies_pass_with_the_unchanged_rules(tmp_path: Path) -> None:
    """The control for the mutations below: copying the tests into tmp_path breaks nothing."""
    proc = promtool("test", "rules", *copies_against(RULES.read_text(), tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("change", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_a_changed_rule_fails_its_tests(change: tuple[str, str], tmp_path: Path) -> None:
    old, new = change
    text = RULES.read_text()
    assert text.count(old) == 1, f"the mutation's text is not in the rules once: {old!r}"
    copies = copies_against(text.replace(old, new), tmp_path)
    # Still valid rules: what fails is the behaviour the unit tests pin.
    assert promtool("check", "rules", str(tmp_path / "rules.yaml")).returncode == 0
    proc = promtool("test", "rules", *copies)
    assert proc.returncode != 0, f"the alert tests still pass with {old!r} -> {new!r}"
    assert "FAILED" in proc.stdout + proc.stderr


def test_the_chart_renders_the_rules_file_verbatim() -> None:
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]
    docs = render(
        "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=kps"
    )
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "system"
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    assert "{{ $labels.secret }}" in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]

    docs = render("--set", "prometheusRule.enabled=true", "--set", "prometheusRule.namespace=mon")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["namespace"] == "mon"


def test_the_rules_read_only_metrics_the_operator_exports() -> None:
    metrics = Metrics()
    metrics.leader.set(1)
    now = datetime.datetime.now(datetime.UTC)
    metrics.observe_secret(
        SecretRef("shop", "www-tls"),
        status="good",
        expires_at=now + datetime.timedelta(days=1),
        refresh_at=now + datetime.timedelta(hours=23),
    )
    exported = {
        sample.name
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }
    used = {name for rule in rules() for name in re.findall(r"\bocsp_stapler_\w+", rule["expr"])}
    assert used, "no ocsp_stapler_ metric in the rules' expressions"
    assert used - exported == set(), f"not in the operator's /metrics: {used - exported}"
