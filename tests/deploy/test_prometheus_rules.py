"""deploy/prometheus: the alert rules and the example config pass promtool, and the rules' unit tests pass."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY, PROMETHEUS_OWN, metric_names

PROMETHEUS = DEPLOY / "prometheus"


def promtool_run(promtool: str, *args: str) -> None:
    result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_alert_rules_are_valid(promtool: str) -> None:
    promtool_run(promtool, "check", "rules", "alerts.yml")


def test_the_alert_rules_unit_tests_pass(promtool: str) -> None:
    promtool_run(promtool, "test", "rules", "alerts_test.yml")


def test_the_example_prometheus_config_is_valid(promtool: str) -> None:
    promtool_run(promtool, "check", "config", "prometheus.yml")


def test_every_alert_uses_only_exported_metrics_and_is_unit_tested(exported_metrics: frozenset[str]) -> None:
    tested = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))
    tested_alerts = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    for rule in rules():
        unknown = metric_names(rule["expr"]) - exported_metrics - PROMETHEUS_OWN
        assert not unknown, f"{rule['alert']} uses {sorted(unknown)}"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["alert"] in tested_alerts, f"{rule['alert']} has no promtool unit test"
