"""Alert rules: promtool check and unit tests, a firing and a silent case per alert, real names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "rules" / "relayprobe.rules.yml"
CHART_RULES = ROOT / "helm" / "relayprobe" / "files" / "relayprobe.rules.yml"
RULE_TESTS = ROOT / "helm" / "rules" / "tests" / "relayprobe.rules.test.yml"
#: Every promtool test file of the rules (posture.rules.test.yml: the posture alerts).
RULE_TEST_FILES = sorted(RULE_TESTS.parent.glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
# The default runbook_url base of every alert (a placeholder: docs/runbook.md says how to override).
RUNBOOK_BASE = "https://github.com/relayprobe/relayprobe/blob/main/docs/runbook.md"
FIXTURE = ROOT / "tests" / "fixtures" / "metric_names.txt"
# Series Prometheus makes itself rather than scraping them from relayprobe.
PROMETHEUS_SERIES = {"up"}
METRIC_RE = re.compile(r"\brelayprobe_[a-zA-Z0-9_]+")
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}


# --- the metric-name set (shared with test_dashboard.py and a later live-scrape test) -------------


def sample_names(families: dict[str, str]) -> set[str]:
    """Sample names a query may use for metric families {name: type}."""
    names = set()
    for name, kind in families.items():
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"  # OpenMetrics names the counter family without the suffix
        names.update(name + s for s in SUFFIXES.get(kind, ("",)))
    return names


def names_from_exposition(text: str) -> set[str]:
    """Sample names in a /metrics body, plus those of declared families with no samples yet."""
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)
    return sample_names(families) | set(samples)


def exposed_metric_names() -> set[str]:
    """relayprobe's sample names: from RELAYPROBE_METRICS_SOURCE (file or URL) or the fixture."""
    source = os.environ.get("RELAYPROBE_METRICS_SOURCE", "")
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=10) as reply:
            return names_from_exposition(reply.read().decode())
    if source:
        return names_from_exposition(Path(source).read_text())
    lines = [ln.split() for ln in FIXTURE.read_text().splitlines() if ln and ln[0] != "#"]
    return sample_names(dict(lines))


def metric_names_in(promql: str) -> set[str]:
    return set(METRIC_RE.findall(promql))


# --- helpers ----------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not on PATH: run `bash tests/tools/install-k8s.sh` (Debian prometheus)"
        )
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


ALERTS = sorted({r["alert"] for r in rules()})
ALERTS_WITH_FOR = sorted({r["alert"] for r in rules() if "for" in r})


def run_tests_against(rule_groups: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess:
    """promtool test rules with the shipped tests but the given rules in place of the shipped."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "relayprobe.rules.yml").write_text(yaml.safe_dump(rule_groups, sort_keys=False))
    for path in RULE_TEST_FILES:
        shutil.copy(path, tmp_path / "tests" / path.name)
    return promtool("test", "rules", *(str(tmp_path / "tests" / p.name) for p in RULE_TEST_FILES))


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RULES, CHART_RULES], ids=["plain", "chart"])
def test_promtool_check_rules_passes(path: Path) -> None:
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_chart_ships_the_plain_rules_file_unchanged() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        f"{CHART_RULES.relative_to(ROOT)} differs from {RULES.relative_to(ROOT)}: edit both"
    )


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", *map(str, RULE_TEST_FILES))
    assert out.returncode == 0 and "FAILED" not in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(RULE_TEST_FILES), out.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = [
        c
        for path in RULE_TEST_FILES
        for t in yaml.safe_load(path.read_text())["tests"]
        for c in t["alert_rule_test"]
    ]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"no test where {alert} fires"
        assert any(not c["exp_alerts"] for c in mine), f"no test where {alert} stays silent"


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_fail_when_the_alert_never_fires(alert: str, tmp_path: Path) -> None:
    groups = yaml.safe_load(RULES.read_text())
    for rule in (r for g in groups["groups"] for r in g["rules"] if r["alert"] == alert):
        rule["expr"] = "vector(1) > 2"
    out = run_tests_against(groups, tmp_path)
    assert out.returncode != 0 and f"alertname: {alert}," in out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("alert", ALERTS_WITH_FOR)
def test_unit_tests_fail_when_the_pending_period_is_dropped(alert: str, tmp_path: Path) -> None:
    groups = yaml.safe_load(RULES.read_text())
    for rule in (r for g in groups["groups"] for r in g["rules"] if r["alert"] == alert):
        del rule["for"]
    out = run_tests_against(groups, tmp_path)
    assert out.returncode != 0 and f"alertname: {alert}," in out.stderr, out.stdout + out.stderr


def test_alerts_have_severity_summary_description_and_a_runbook_section() -> None:
    headings = set(re.findall(r"^##+ (\S+)", RUNBOOK.read_text(), re.M))
    for rule in rules():
        # info: a readiness notice (RelayProbeBasicAuthInUse), never a page.
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["alert"] in headings, f"docs/runbook.md has no section for {rule['alert']}"


def test_every_alert_links_its_runbook_section_by_default() -> None:
    """runbook_url = <base>#<alert name lower-cased>: the anchor of the section of that name."""
    anchors = {h.lower() for h in re.findall(r"^## (\S+)$", RUNBOOK.read_text(), re.M)}
    for rule in rules():
        url = rule["annotations"].get("runbook_url")
        assert url == f"{RUNBOOK_BASE}#{rule['alert'].lower()}", rule["alert"]
        assert url.split("#")[1] in anchors, f"docs/runbook.md has no anchor for {url}"


def test_the_runbook_has_a_section_per_alert_and_none_for_gone_ones() -> None:
    sections = set(re.findall(r"^## (RelayProbe\S*)$", RUNBOOK.read_text(), re.M))
    assert sections == set(ALERTS)
    assert RUNBOOK_BASE in RUNBOOK.read_text(), "the runbook should say how to replace the base URL"


def test_no_rule_depends_on_the_scrape_job_name() -> None:
    for rule in rules():
        assert not re.search(r"\bjob\s*=~?", rule["expr"]), rule["alert"]


def test_durations_come_from_the_probe_interval_not_from_for() -> None:
    """Rules that judge a target's schedule derive the time in the expression; `for:` is kept to
    the interval-independent ones (a failed scrape, a failed reload) and stays short."""
    for rule in rules():
        uses_interval = "relayprobe_probe_interval_seconds" in rule["expr"]
        assert not (uses_interval and "for" in rule), rule["alert"]
        if "for" in rule:
            assert rule["for"] in {"1m", "2m", "5m"}, rule["alert"]
    failing = " ".join(r["expr"] for r in rules() if r["alert"] == "RelayProbeFailing")
    assert (
        "relayprobe_failed_runs_total" in failing and "relayprobe_probe_interval_seconds" in failing
    )


def test_verdict_alerts_judge_only_what_expect_configures() -> None:
    """relayprobe_check_ok has series only for configured checks: the auth, placement and latency
    alerts must go through it, never through the raw result (result!="pass") or a fixed latency."""
    for alert, checks in (
        ("RelayProbeAuthNotPassing", {"spf", "dkim", "dmarc", "compauth"}),
        ("RelayProbeJunkPlacement", {"placement", "scl"}),
        ("RelayProbeDeliverySlow", {"latency"}),
    ):
        exprs = [r["expr"] for r in rules() if r["alert"] == alert]
        for expr in exprs:
            assert "relayprobe_check_ok{" in expr, alert
            assert "result!=" not in expr and "histogram_quantile" not in expr, alert
        named = set().union(*(re.findall(r"check=~?\"([a-z|]+)\"", e) for e in exprs))
        assert set("|".join(named).split("|")) == checks, alert


def test_readiness_alerts_come_from_the_configuration_series() -> None:
    """BasicAuthInUse reads relayprobe_auth_info (from start-up, no run needed) for exactly SMTP
    AUTH with a password in mode submission; ClientCertExpiring the certificate read at load."""
    exprs = {r["alert"]: r["expr"] for r in rules()}
    basic = exprs["RelayProbeBasicAuthInUse"]
    assert metric_names_in(basic) == {"relayprobe_auth_info"}
    selectors = dict(re.findall(r'(\w+)="([^"]*)"', basic))
    assert selectors == {"side": "smtp", "method": "password", "mode": "submission"}
    assert metric_names_in(exprs["RelayProbeClientCertExpiring"]) == {
        "relayprobe_client_cert_expiry_timestamp_seconds"
    }
    assert "21 * 86400" in exprs["RelayProbeClientCertExpiring"]
    sides = {r["labels"].get("side") for r in rules() if r["alert"] == "RelayProbeTLSCertExpiring"}
    assert sides == {"smtp", "imap"}  # the relay's and the IMAP server's, told apart
    failing = exprs["RelayProbeFailing"]
    assert "relayprobe_imap_cert_expiry_timestamp_seconds" in failing  # yields to either expiry


def test_unit_tests_cover_a_one_minute_and_a_one_hour_interval() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    failing = [
        t for t in tests if any(c["alertname"] == "RelayProbeFailing" for c in t["alert_rule_test"])
    ]
    intervals = {
        s["values"].split("x")[0]
        for t in failing
        for s in t["input_series"]
        if s["series"].startswith("relayprobe_probe_interval_seconds")
    }
    assert {"60", "3600"} <= intervals


def test_rules_use_only_metric_names_the_exporter_exposes() -> None:
    exposed = exposed_metric_names() | PROMETHEUS_SERIES
    for rule in rules():
        used = metric_names_in(rule["expr"]) | metric_names_in(str(rule["annotations"]))
        assert used <= exposed, f"{rule['alert']} uses unknown {sorted(used - exposed)}"
    assert metric_names_in(RULES.read_text()) - {"relayprobe_"} <= exposed


def test_metric_name_set_follows_prometheus_naming() -> None:
    lines = [ln.split() for ln in FIXTURE.read_text().splitlines() if ln and ln[0] != "#"]
    for name, kind in lines:
        # Besides relayprobe's own: prometheus_client's standard process and platform collectors.
        assert re.fullmatch(r"relayprobe_[a-z0-9_]+", name) or re.fullmatch(
            r"(process|python)_[a-z0-9_]+", name
        ), name
        assert name.endswith("_total") == (kind == "counter"), name
        if name.endswith("_timestamp_seconds"):
            assert kind == "gauge", name


def test_metric_name_fixture_matches_what_the_exporter_renders() -> None:
    from exporters.metrics import exposition
    from exporters.store import ResultStore

    text = exposition(ResultStore(), version="0.0.0", reload_ok=lambda: True).decode()
    lines = [ln.split() for ln in FIXTURE.read_text().splitlines() if ln and ln[0] != "#"]
    assert names_from_exposition(text) == sample_names(dict(lines))


def test_exposition_parser_reads_samples_and_sample_less_families() -> None:
    text = (
        "# HELP relayprobe_runs_total Runs.\n# TYPE relayprobe_runs_total counter\n"
        'relayprobe_runs_total{target="a"} 3.0\n'
        "# TYPE relayprobe_delivery_duration_seconds histogram\n"
        "# TYPE relayprobe_build_info gauge\n"
        'relayprobe_build_info{version="0.1.0"} 1.0\n'
    )
    assert names_from_exposition(text) == {
        "relayprobe_runs_total",
        "relayprobe_delivery_duration_seconds_bucket",
        "relayprobe_delivery_duration_seconds_count",
        "relayprobe_delivery_duration_seconds_sum",
        "relayprobe_build_info",
    }


def test_chart_prometheus_rule_carries_the_shipped_rules(tmp_path: Path) -> None:
    from tests.system.test_helm import DEFAULT, only, render

    rule = only(render(DEFAULT, "prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_chart_prometheus_rule_options_disable_label_and_extend(tmp_path: Path) -> None:
    from tests.system.test_helm import only, render

    spec = only(render("prometheus-rule-values.yaml"), "PrometheusRule")["spec"]
    shipped, custom = spec["groups"]
    names = [r["alert"] for r in shipped["rules"]]
    junk = [r for r in rules() if r["alert"] == "RelayProbeJunkPlacement"]
    assert "RelayProbeJunkPlacement" not in names and len(names) == len(rules()) - len(junk)
    for r in shipped["rules"]:
        assert r["labels"]["team"] == "mail" and r["labels"]["severity"]
        assert r["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/relayprobe/runbook#{r['alert'].lower()}"
        )
    assert custom["name"] == "relayprobe-custom"
    assert [r["alert"] for r in custom["rules"]] == ["RelayProbeFailingFast"]
    path = tmp_path / "rendered.rules.yml"
    path.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_values_schema_lets_every_shipped_alert_be_disabled_by_name() -> None:
    schema = json.loads((ROOT / "helm" / "relayprobe" / "values.schema.json").read_text())
    disabled = schema["properties"]["prometheusRule"]["properties"]["disabled"]
    assert sorted(disabled["propertyNames"]["enum"]) == ALERTS
