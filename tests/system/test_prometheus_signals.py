"""The shipped alert rules in a real Prometheus, scraping the real daemon on the local mail system."""

# One daemon probes five targets every 3 s (docs/runbook.md, "How the alerts fit together"):
#
# | target | what happens | status | alerts |
# | --- | --- | --- | --- |
# | good | submission, delivered in time, all checks met | 0 | BasicAuthInUse (info) |
# | slow | delivered 3 s late (`inbox+delay3`), warning 1 s, critical 30 s | 1 | DeliverySlow, BasicAuthInUse |
# | rejected | `550 5.1.1` at RCPT (`inbox+reject`) | 2 | Failing, BasicAuthInUse |
# | junked | direct send into the MX without AUTH from probe.test: SPF fail, no DKIM, DMARC fail, Junk; expects spf/dkim/dmarc pass and the inbox | 2 | Failing, JunkPlacement, AuthNotPassing x3 |
# | intra | direct send from partner.test (SPF pass, dkim=none, DMARC pass with p=none), expects only `placement: inbox`, like a probe inside one tenant | 0 | none |
#
# Prometheus (1 s scrape and rule evaluation) loads helm/rules/relayprobe.rules.yml unchanged, under
# a job name without "relayprobe" in it. Every alert of those targets has no `for:` (durations come
# from the 3 s interval in the expression), so each must be *firing*, not pending. The alerts with a
# `for:` are RelayProbeConfigReloadFailed (not provoked here) and RelayProbeExporterDown (5 minutes):
# the test stops the daemon and checks that ExporterDown is pending, alone, with the job and instance
# labels; that it turns to firing after 5 minutes is shown by promtool
# (helm/rules/tests/relayprobe.rules.test.yml), as are the alerts whose windows are hours long
# (1-hour intervals, RelayProbeNoRecentSuccess, certificate expiry).
#
# Prometheus starts first and tries the daemon's address before the daemon listens, so it sees every
# counter at 0; the documented success ratio must read exactly 0 for "rejected" at every evaluation
# step after its first and after its second failure. The dashboard's queries run on the same data.

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system import daemon_helpers
from tests.system.daemon_helpers import (
    Daemon,
    Prometheus,
    free_port,
    running_daemon,
    running_prometheus,
    stop,
    wait_for,
)
from tests.system.probe_configs import target_dict
from tests.system.test_dashboard import as_prometheus_sees_it, query_of
from tests.system.test_dashboard import queries as dashboard_queries

pytestmark = pytest.mark.testbed

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "rules" / "relayprobe.rules.yml"
JOB = "mail-probes"  # no "relayprobe" in it: no rule may depend on the job name
# The success ratio as docs/exporter.md documents it.
SUCCESS_RATIO = (
    "1 - increase(relayprobe_failed_runs_total[1h]) / increase(relayprobe_runs_total[1h])"
)

EXPECTED_STATUS = {"good": 0, "slow": 1, "rejected": 2, "junked": 2, "intra": 0}
# Firing alerts per target: (alertname, severity, the labels that tell them apart).
# good, slow and rejected send with a password over submission: the info alert that SMTP AUTH
# with a password is being retired fires for them (docs/runbook.md, RelayProbeBasicAuthInUse).
BASIC_AUTH = ("RelayProbeBasicAuthInUse", "info", ())
EXPECTED_ALERTS = {
    "good": {BASIC_AUTH},
    "slow": {("RelayProbeDeliverySlow", "warning", (("check", "latency"),)), BASIC_AUTH},
    "rejected": {("RelayProbeFailing", "critical", ()), BASIC_AUTH},
    "junked": {
        ("RelayProbeFailing", "critical", ()),
        ("RelayProbeJunkPlacement", "warning", (("check", "placement"),)),
        ("RelayProbeAuthNotPassing", "warning", (("check", "spf"), ("result", "fail"))),
        ("RelayProbeAuthNotPassing", "warning", (("check", "dkim"), ("result", "none"))),
        ("RelayProbeAuthNotPassing", "warning", (("check", "dmarc"), ("result", "fail"))),
    },
    "intra": set(),
}
DISTINGUISHING = ("check", "result")


def config_doc(tb: Any, instance: str) -> dict[str, Any]:
    def target(name: str, **over: Any) -> dict[str, Any]:
        t = target_dict(tb, name, interval="3s", jitter=0, timeout="15s", **over)
        t["thresholds"] = {"warning": "10s", "critical": "14s"}
        return t

    def direct_send(name: str, **over: Any) -> dict[str, Any]:
        # Into the MX listener without AUTH (STARTTLS offered and required by relayprobe).
        t = target(name, smtp={"port": tb.mx_port}, **over)
        t["smtp"].pop("auth")
        return t

    slow = target("slow", rcpt_to="inbox+delay3@probe.test")
    slow["thresholds"] = {"warning": "1s", "critical": "30s"}
    slow["timeout"] = "30s"  # thresholds never beyond the timeout
    intra = direct_send("intra", mail_from="probe@partner.test")
    intra["expect"] = {"placement": "inbox"}
    del intra["thresholds"]
    return {
        "instance": instance,
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [
            target("good"),
            slow,
            direct_send("junked"),
            intra,
            target("rejected", rcpt_to="inbox+reject@probe.test"),  # last: first run at ~2.4 s
        ],
    }


@pytest.fixture(scope="module")
def stack(testbed, tmp_path_factory) -> Iterator[tuple[Daemon, Prometheus]]:
    """Prometheus first, scraping the daemon's address before it listens, so that it sees every
    counter at 0: "rejected" (the last target) runs first about 2.4 s after the daemon starts."""
    tmp = tmp_path_factory.mktemp("signals")
    daemon_port = free_port()
    with running_prometheus(tmp, [f"127.0.0.1:{daemon_port}"], job=JOB, rules=RULES) as prom:
        groups = prom.get("/api/v1/rules")["groups"]
        assert [g["name"] for g in groups] == ["relayprobe"], (tmp / "prometheus.log").read_text()
        # Target discovery reaches the scrape manager a few seconds after start-up: wait until
        # Prometheus has tried (and failed) to scrape the address the daemon will listen on.
        wait_for("Prometheus to scrape the (not yet listening) daemon", lambda: prom.scraped(), 30)
        instance = f"test-sig-{os.getpid()}-{int(time.time()) % 100000}"
        # start_daemon picks a free port itself: hand it the one Prometheus already scrapes.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(daemon_helpers, "free_port", lambda: daemon_port)
            daemon_cm = running_daemon(
                testbed,
                tmp,
                config_doc(testbed, instance),
                "--shutdown.grace",
                "5",
                "--smtp.max-messages-per-minute",
                "600",
            )
            daemon = daemon_cm.__enter__()
        try:
            assert daemon.url == f"http://127.0.0.1:{daemon_port}"
            yield daemon, prom
        finally:
            daemon_cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def daemon(stack) -> Daemon:
    return stack[0]


@pytest.fixture(scope="module")
def prometheus(stack) -> Prometheus:
    return stack[1]


def firing_by_target(alerts: list[dict[str, Any]]) -> dict[str, set]:
    got: dict[str, set] = {t: set() for t in EXPECTED_ALERTS}
    for a in alerts:
        labels = a["labels"]
        key = (
            labels["alertname"],
            labels["severity"],
            tuple((k, labels[k]) for k in DISTINGUISHING if k in labels),
        )
        if a["state"] == "firing":
            got.setdefault(labels.get("target", ""), set()).add(key)
    return got


def test_status_per_target_from_prometheus(daemon, prometheus):
    def statuses():
        got = prometheus.query(f'relayprobe_status{{job="{JOB}"}}')
        return got if got == EXPECTED_STATUS else None

    try:
        wait_for("relayprobe_status 0/1/2/2/0", statuses, 60)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: {prometheus.query('relayprobe_status')}; {daemon.results()}"
        ) from None


def test_success_ratio_is_exactly_zero_after_the_first_and_second_failure(daemon, prometheus):
    def failed_twice():
        runs = prometheus.query(f'relayprobe_runs_total{{job="{JOB}", target="rejected"}}')
        return runs.get("rejected", 0) >= 3

    wait_for("three runs of rejected in Prometheus", failed_twice, 60)
    end = time.time()
    # Every rule-evaluation step from before the first run on: where 1 or 2 runs are in, the
    # documented ratio is exactly 0 (an `increase` of a counter born at 0 by the same factor).
    begin = end - 120
    runs = prometheus.query_range(
        f'relayprobe_runs_total{{job="{JOB}", target="rejected"}}', begin, end, 0.5
    )["rejected"]
    selector = f'_total{{job="{JOB}", target="rejected"}}['
    ratio = prometheus.query_range(SUCCESS_RATIO.replace("_total[", selector), begin, end, 0.5).get(
        "rejected", {}
    )
    for n in (1, 2):
        steps = [t for t, v in runs.items() if v == n]
        assert steps, f"no evaluation step saw exactly {n} run(s): {runs}"
        values = {ratio.get(t) for t in steps}
        assert values == {0.0}, f"success ratio after failure {n}: {values}; {runs}; {ratio}"
    # The breakdown counter cannot do this: its series is born at 1 with the first failure.
    first = min(t for t, v in runs.items() if v == 1)
    old = prometheus.query(
        "1 - (sum(increase(relayprobe_failures_total{target='rejected'}[1h])) or vector(0))"
        " / sum(increase(relayprobe_runs_total{target='rejected'}[1h]))",
        at=first,
    )
    assert list(old.values()) == [1.0], old


def test_rules_fire_exactly_the_documented_alerts_per_target(daemon, prometheus):
    def settled():
        got = firing_by_target(prometheus.alerts())
        return got if got == EXPECTED_ALERTS else None

    try:
        wait_for("the documented alerts to fire", settled, 90)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: got {firing_by_target(prometheus.alerts())}; want {EXPECTED_ALERTS}; "
            f"results {daemon.results()}"
        ) from None
    # Stays so for several more runs of every target, with nothing pending either.
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        alerts = prometheus.alerts()
        assert firing_by_target(alerts) == EXPECTED_ALERTS
        assert [a for a in alerts if a["state"] != "firing"] == []
        time.sleep(1)
    alerts = prometheus.alerts()
    for a in alerts:
        assert a["annotations"]["runbook_url"].endswith("#" + a["labels"]["alertname"].lower())
        assert a["labels"]["job"] == JOB and a["labels"]["instance"] in daemon.url
    slow = next(a for a in alerts if a["labels"]["alertname"] == "RelayProbeDeliverySlow")
    assert "(warning 1s, critical 30s)" in slow["annotations"]["description"], slow
    assert 3 <= float(slow["value"]) < 30


def test_check_series_exist_only_for_configured_checks(daemon, prometheus):
    got: dict[str, set[str]] = {}
    for r in prometheus.get("/api/v1/query", query=f'relayprobe_check_ok{{job="{JOB}"}}')["result"]:
        got.setdefault(r["metric"]["target"], set()).add(r["metric"]["check"])
    full = {"latency", "placement", "spf", "dkim", "dmarc"}
    assert got == {"good": full, "slow": full, "junked": full, "intra": {"placement"}}
    intra_auth = prometheus.query(
        f'relayprobe_auth_result{{job="{JOB}", target="intra", method="dkim"}} == 1'
    )
    assert intra_auth == {"intra": 1.0}  # dkim=none is there; nothing judges it


def test_dashboard_queries_on_the_live_series(daemon, prometheus):
    """Every dashboard query evaluates; "since last success" says never (-1) where there was none."""
    for _title, expr in dashboard_queries():
        prometheus.get("/api/v1/query", query=as_prometheus_sees_it(expr))  # status success
    since = prometheus.query(query_of("Since last success (probe intervals)"))
    assert since["rejected"] == since["junked"] == -1, since
    assert 0 <= since["good"] < 3 and 0 <= since["intra"] < 3, since
    ratio = prometheus.query(query_of("Success ratio (1h window)"))
    assert ratio["rejected"] == ratio["junked"] == 0 and ratio["good"] == 1, ratio
    status = prometheus.query(query_of("Status"))
    assert status == EXPECTED_STATUS


def test_a_stopped_exporter_leaves_exactly_one_pending_exporter_down(daemon, prometheus):
    assert stop(daemon.proc) == 0

    def only_exporter_down():
        alerts = prometheus.alerts()
        return (
            alerts
            if [a["labels"]["alertname"] for a in alerts] == ["RelayProbeExporterDown"]
            else None
        )

    alerts = wait_for("every alert but RelayProbeExporterDown to resolve", only_exporter_down, 20)
    (down,) = alerts
    assert down["state"] == "pending"  # for: 5m (firing after it: promtool)
    assert down["labels"]["job"] == JOB and down["labels"]["instance"] in daemon.url
    assert "cannot be scraped" in down["annotations"]["summary"]
    assert not math.isnan(float(down["value"]))
