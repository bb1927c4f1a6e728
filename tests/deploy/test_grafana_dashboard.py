"""deploy/grafana/ziggurat-dashboard.json: importable, templated, and querying only real metrics."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, PROMETHEUS_OWN, metric_names

DASHBOARD = DEPLOY / "grafana" / "ziggurat-dashboard.json"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_importable_and_templated(dashboard: dict[str, Any]) -> None:
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["type"] == "query" and variables["model"]["includeAll"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_the_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    queried = set().union(*(metric_names(expr) for _, expr in expressions(dashboard)))
    for name in (
        "ziggurat_http_requests_total",
        "ziggurat_requests_total",
        "ziggurat_time_to_first_token_seconds_bucket",
        "ziggurat_inter_token_latency_seconds_bucket",
        "ziggurat_e2e_request_latency_seconds_bucket",
        "ziggurat_prompt_tokens_total",
        "ziggurat_completion_tokens_total",
        "ziggurat_queue_depth",
        "ziggurat_queue_depth_by_priority",
        "ziggurat_queue_wait_seconds_bucket",
        "ziggurat_active_streams",
        "ziggurat_cache_lookups_total",
        "ziggurat_rejections_total",
        "ziggurat_errors_total",
        "ziggurat_engine_batch_size",
        "ziggurat_engine_kv_cache_usage_ratio",
        "ziggurat_engine_endpoint_up",
        "ziggurat_engine_endpoint_in_flight",
    ):
        assert name in queried, name
    for histogram in ("time_to_first_token", "inter_token_latency", "e2e_request_latency"):
        queries = [expr for _, expr in expressions(dashboard) if histogram in expr]
        for quantile in ("0.5", "0.95", "0.99"):
            assert any(expr.startswith(f"histogram_quantile({quantile},") for expr in queries), histogram


def test_every_panel_queries_only_metrics_the_server_exports(
    dashboard: dict[str, Any], exported_metrics: frozenset[str]
) -> None:
    for title, expr in expressions(dashboard):
        unknown = metric_names(expr) - exported_metrics - PROMETHEUS_OWN
        assert not unknown, f"panel {title!r} queries {sorted(unknown)}"


def test_every_panel_query_is_valid_promql(dashboard: dict[str, Any], promtool: str, tmp_path: Path) -> None:
    # promtool parses rule files: each query, with Grafana's variables filled in, becomes a recording rule.
    rules = [
        {
            "record": f"dashboard:panel_{index}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$model", ".*"),
        }
        for index, (_, expr) in enumerate(expressions(dashboard))
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
