"""Grafana dashboard: valid JSON and layout, variables, real metric names, PromQL that computes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system.test_alerts import exposed_metric_names, metric_names_in

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "relayprobe" / "files" / "relayprobe-dashboard.json"
# What Grafana substitutes before a query reaches Prometheus (All selected, 1h range).
GRAFANA_VARS = {
    "$instance": ".*",
    "$target": ".*",
    "$__range": "1h",
    "$__rate_interval": "2m",
    "$__interval": "1m",
}
# The only families without a target label.
PER_INSTANCE = {"relayprobe_build_info", "relayprobe_config_last_reload_successful"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def as_prometheus_sees_it(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def query_of(title: str, ref: str = "A") -> str:
    panel = next(p for p in panels() if p["title"] == title)
    return as_prometheus_sees_it(next(t["expr"] for t in panel["targets"] if t["refId"] == ref))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not on PATH: run `bash tests/tools/install-k8s.sh` (Debian prometheus)"
        )
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def test_dashboard_is_self_contained_grafana_json() -> None:
    dash = dashboard()
    assert dash["uid"] == "relayprobe-overview" and dash["title"]
    assert dash["schemaVersion"] >= 36
    # The Grafana sidecar loads files as they are: no import-time ${DS_...} placeholders.
    assert "__inputs" not in dash and "${DS_" not in DASHBOARD.read_text()


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_uses_the_datasource_variable() -> None:
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_instance_and_target_variables_come_from_relayprobe_series() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert (
        variables["instance"]["query"]["query"] == "label_values(relayprobe_build_info, instance)"
    )
    assert "$instance" in variables["target"]["query"]["query"]
    assert all(variables[n]["multi"] and variables[n]["includeAll"] for n in ("instance", "target"))


def test_every_query_filters_by_the_selected_instance_and_target() -> None:
    for title, expr in queries():
        selectors = re.findall(r"(relayprobe_[a-z0-9_]+)\{([^}]*)\}", expr)
        assert selectors, f"{title}: no relayprobe selector in {expr!r}"
        for name, matchers in selectors:
            assert 'instance=~"$instance"' in matchers, f"{title}: {name} ignores $instance"
            if name not in PER_INSTANCE:
                assert 'target=~"$target"' in matchers, f"{title}: {name} ignores $target"


def test_queries_use_only_metric_names_the_exporter_exposes() -> None:
    exposed = exposed_metric_names()
    for title, expr in queries():
        unknown = metric_names_in(expr) - exposed
        assert not unknown, f"{title} uses unknown {sorted(unknown)}"


def test_dashboard_covers_success_latency_failures_verdict_and_certificates() -> None:
    used = set().union(*(metric_names_in(e) for _t, e in queries()))
    assert {
        "relayprobe_status",
        "relayprobe_runs_total",
        "relayprobe_failed_runs_total",
        "relayprobe_failures_total",
        "relayprobe_delivery_duration_seconds_bucket",
        "relayprobe_threshold_seconds",
        "relayprobe_check_ok",
        "relayprobe_check_failures_total",
        "relayprobe_auth_result",
        "relayprobe_spam_confidence_level",
        "relayprobe_tls_cert_expiry_timestamp_seconds",
    } <= used
    assert any("by (instance, target, stage, reason)" in e for _t, e in queries()), (
        "no stage/reason breakdown per target"
    )


def test_ratios_use_the_counters_that_exist_from_start_up() -> None:
    """relayprobe_failures_total series appear at their first failure: never a ratio's numerator."""
    for title, expr in queries():
        if "relayprobe_runs_total" in expr:
            assert "relayprobe_failed_runs_total" in expr, title
            assert "relayprobe_failures_total" not in expr, title


def test_no_panel_assumes_a_probe_interval() -> None:
    """Ages are shown in probe intervals, latency next to the configured thresholds."""
    for p in panels():
        exprs = " ".join(t["expr"] for t in p["targets"])
        if "relayprobe_last_success_timestamp_seconds" in exprs and p["type"] == "stat":
            assert "relayprobe_probe_interval_seconds" in exprs, p["title"]
            assert p["fieldConfig"]["defaults"]["unit"] != "s", p["title"]
        if "relayprobe_last_delivery_duration_seconds" in exprs:
            assert "relayprobe_threshold_seconds" in exprs, p["title"]
    since = next(p for p in panels() if p["title"].startswith("Since last success"))
    mappings = since["fieldConfig"]["defaults"]["mappings"]
    assert mappings[0]["options"]["-1"]["text"] == "never"
    status = next(p for p in panels() if p["title"] == "Status")
    texts = {
        k: v["text"] for k, v in status["fieldConfig"]["defaults"]["mappings"][0]["options"].items()
    }
    assert texts == {"0": "OK", "1": "WARNING", "2": "CRITICAL", "3": "UNKNOWN"}


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query{i}", "expr": as_prometheus_sees_it(expr)}
        for i, (_title, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def promtool_expr_tests(
    series: list[tuple[str, str]], cases: list[dict[str, Any]], tmp_path: Path
) -> None:
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": cases,
            }
        ],
    }
    path = tmp_path / "dashboard.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    out = promtool("test", "rules", str(path))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_success_ratio_and_latency_queries_compute_the_right_numbers(tmp_path: Path) -> None:
    """One failed run in four gives 75 %; never failed gives 100 %; failed from the start gives 0."""
    labels = 'job="relayprobe", instance="site-a"'
    series = [
        (f'relayprobe_runs_total{{{labels}, target="a"}}', "0+1x60"),
        (f'relayprobe_failed_runs_total{{{labels}, target="a"}}', "0+0.25x60"),
        (f'relayprobe_runs_total{{{labels}, target="b"}}', "0+1x60"),
        (f'relayprobe_failed_runs_total{{{labels}, target="b"}}', "0x60"),
        # Fails from its first run on (the first failure at 58m): exactly 0, not 100 %.
        (f'relayprobe_runs_total{{{labels}, target="c"}}', "0x57 1 2 2"),
        (f'relayprobe_failed_runs_total{{{labels}, target="c"}}', "0x57 1 2 2"),
        # Its breakdown series appears with the first failure (value 1).
        (
            f'relayprobe_failures_total{{{labels}, target="c", stage="submit", reason="smtp_rejected"}}',
            "_x57 1 2 2",
        ),
        (
            f'relayprobe_failures_total{{{labels}, target="a", stage="auth", reason="auth_failed"}}',
            "0+0.25x60",
        ),
    ]
    # Target "a": one delivery a minute, each between 120 s and 300 s (p95 = 291 s).
    for le, values in (("60", "0x60"), ("120", "0x60"), ("300", "0+1x60"), ("+Inf", "0+1x60")):
        series.append(
            (
                f'relayprobe_delivery_duration_seconds_bucket{{{labels}, target="a", le="{le}"}}',
                values,
            )
        )
    ratio = [
        {"labels": '{instance="site-a", target="a"}', "value": 0.75},
        {"labels": '{instance="site-a", target="b"}', "value": 1},
        {"labels": '{instance="site-a", target="c"}', "value": 0},
    ]
    promtool_expr_tests(
        series,
        [
            {
                "expr": query_of("Success ratio (1h window)"),
                "eval_time": "60m",
                "exp_samples": ratio,
            },
            {
                "expr": query_of("Success ratio (time range)"),
                "eval_time": "60m",
                "exp_samples": ratio,
            },
            # After c's first failure already.
            {
                "expr": query_of("Success ratio (1h window)"),
                "eval_time": "58m",
                "exp_samples": [
                    {"labels": '{instance="site-a", target="a"}', "value": 0.75},
                    {"labels": '{instance="site-a", target="b"}', "value": 1},
                    {"labels": '{instance="site-a", target="c"}', "value": 0},
                ],
            },
            {
                "expr": query_of("Delivery latency p50 / p95 (1h window)"),
                "eval_time": "60m",
                "exp_samples": [{"labels": '{instance="site-a", target="a"}', "value": 291}],
            },
            # c's two failures count, though increase() alone sees only one of them.
            {
                "expr": query_of("Failures by target, stage and reason (time range)"),
                "eval_time": "60m",
                "exp_samples": [
                    {
                        "labels": '{instance="site-a", target="a", stage="auth", reason="auth_failed"}',
                        "value": 15,
                    },
                    {
                        "labels": '{instance="site-a", target="c", stage="submit", reason="smtp_rejected"}',
                        "value": 2,
                    },
                ],
            },
        ],
        tmp_path,
    )


def test_since_last_success_counts_intervals_and_says_never(tmp_path: Path) -> None:
    labels = 'job="relayprobe", instance="site-a"'
    series = [
        # A 1-minute target that last succeeded at 6m and a 1-hour one that succeeded at 0m+60s.
        (f'relayprobe_probe_interval_seconds{{{labels}, target="minute"}}', "60x10"),
        (
            f'relayprobe_last_success_timestamp_seconds{{{labels}, target="minute"}}',
            "0 60 120 180 240 300 360x4",
        ),
        (f'relayprobe_probe_interval_seconds{{{labels}, target="hour"}}', "3600x10"),
        (f'relayprobe_last_success_timestamp_seconds{{{labels}, target="hour"}}', "0 60x9"),
        (f'relayprobe_probe_interval_seconds{{{labels}, target="never"}}', "300x10"),
        (f'relayprobe_last_success_timestamp_seconds{{{labels}, target="never"}}', "0x10"),
    ]
    promtool_expr_tests(
        series,
        [
            {
                "expr": query_of("Since last success (probe intervals)"),
                "eval_time": "9m",
                "exp_samples": [
                    {
                        "labels": '{instance="site-a", job="relayprobe", target="minute"}',
                        "value": 3,
                    },
                    {
                        "labels": '{instance="site-a", job="relayprobe", target="hour"}',
                        "value": 0.13333333333333333,
                    },
                    {
                        "labels": '{instance="site-a", job="relayprobe", target="never"}',
                        "value": -1,
                    },
                ],
            }
        ],
        tmp_path,
    )
