"""The daemon's posture checks: record values remembered, a change timestamped in the metrics,
/api/posture, and the status page's posture section in a real browser (Chromium)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.posture.fixture import MS_INCLUDE, PostureDns
from tests.system import test_status_page
from tests.system.daemon_helpers import (
    free_port,
    http,
    parse,
    running_daemon,
    running_prometheus,
    value,
    wait_for,
)
from tests.system.test_status_page import Browser, artefacts

BEFORE = f"v=spf1 include:{MS_INCLUDE} -all"
AFTER = f"v=spf1 ip4:203.0.113.9 include:{MS_INCLUDE} -all"
browser = test_status_page.browser  # headless Chromium, as the status page tests drive it


def _target(name: str, mail_from: str, posture: dict) -> dict:
    """A target whose probes fail at once (nothing listens on its port): only posture matters."""
    return {
        "name": name,
        "interval": "1h",
        "smtp": {"host": "127.0.0.1", "port": free_port(), "security": "starttls", "timeout": "2s"},
        "mail_from": mail_from,
        "rcpt_to": "inbox@probe.test",
        "mailbox": {
            "host": "127.0.0.1",
            "port": free_port(),
            "auth": {"method": "password", "username": "inbox@probe.test", "password": "x" * 12},
        },
        "posture": posture,
    }


def _config(dns: PostureDns, ca_file: Path) -> dict:
    common = {"enabled": True, "interval": "2s", "dns_server": dns.server, "timeout": "2s"}
    return {
        "instance": f"test-posture-{os.getpid()}",
        "tag_secret": "relayprobe-test-tag-secret-0123456789",
        "defaults": {"posture": common},
        "targets": [
            _target("changing", "app@change.test", {}),
            _target("good", "app@good.test", {"ca_file": str(ca_file), "tenant": "contoso"}),
            _target("quiet", "app@syntax.test", {"enabled": False}),
        ],
    }


def _metrics(url: str) -> dict:
    status, body, _ = http(f"{url}/metrics")
    assert status == 200, body
    return parse(body)


@pytest.fixture
def posture_daemon(posture_dns: PostureDns, posture_ca, tmp_path):
    _ca, ca_file = posture_ca
    posture_dns.set_change(BEFORE)
    try:
        with running_daemon(None, tmp_path, _config(posture_dns, ca_file)) as d:
            yield d
    finally:
        posture_dns.set_change(BEFORE)


def test_a_changed_record_is_timestamped_and_the_first_sight_is_the_baseline(
    posture_daemon, posture_dns: PostureDns
) -> None:
    d = posture_daemon

    def checked(domain: str) -> float:
        return (
            value(_metrics(d.url), "relayprobe_posture_last_run_timestamp_seconds", domain=domain)
            or 0
        )

    wait_for(
        "the first posture run of change.test and good.test",
        lambda: checked("change.test") and checked("good.test"),
        30,
    )
    m = _metrics(d.url)
    # Baseline: seen once, not a change.
    assert (
        value(
            m, "relayprobe_dns_record_changed_timestamp_seconds", domain="change.test", record="spf"
        )
        == 0
    )
    infos = [labels for (name, labels), v in m.items() if name == "relayprobe_dns_record_info"]
    spf = [
        dict(lbl) for lbl in infos if ("domain", "change.test") in lbl and ("record", "spf") in lbl
    ]
    assert [s["value"] for s in spf] == [BEFORE]
    assert value(m, "relayprobe_posture_ok", domain="good.test", check="mta_sts_policy") == 1
    assert value(m, "relayprobe_posture_ok", domain="good.test", check="dkim:selector1") == 1
    assert value(m, "relayprobe_posture_dns_errors", domain="good.test") == 0
    # A target with posture off is not checked at all.
    assert not any(("domain", "syntax.test") in lbl for (_n, lbl) in m)
    # A DKIM key is longer than a label should be: cut, with the whole value's hash beside it.
    dkim = next(
        dict(lbl)
        for lbl in infos
        if ("record", "dkim:selector1") in lbl and ("domain", "good.test") in lbl
    )
    assert dkim["value"].startswith("CNAME selector1-good-test._domainkey.contoso.onmicrosoft.com")

    t0 = time.time()
    posture_dns.set_change(AFTER)

    def changed() -> float:
        return (
            value(
                _metrics(d.url),
                "relayprobe_dns_record_changed_timestamp_seconds",
                domain="change.test",
                record="spf",
            )
            or 0
        )

    when = wait_for("the change of change.test's SPF record", changed, 30)
    assert when >= t0 - 1
    m = _metrics(d.url)
    infos = [dict(lbl) for (name, lbl), _v in m.items() if name == "relayprobe_dns_record_info"]
    assert [i["value"] for i in infos if i["domain"] == "change.test" and i["record"] == "spf"] == [
        AFTER
    ]
    # Only the record that changed is marked.
    assert (
        value(
            m,
            "relayprobe_dns_record_changed_timestamp_seconds",
            domain="change.test",
            record="dmarc",
        )
        == 0
    )
    status, body, _ = http(f"{d.url}/api/posture")
    assert status == 200
    doc = {x["domain"]: x for x in json.loads(body)["domains"]}
    spf_record = doc["change.test"]["records"]["spf"]
    assert (spf_record["previous"], spf_record["value"]) == (BEFORE, AFTER)
    assert doc["change.test"]["targets"] == ["changing"]
    assert doc["good.test"]["report"]["state"] == "ok"
    logged = [e for e in d.logs() if e.get("msg") == "DNS record changed"]
    assert logged and logged[0]["domain"] == "change.test" and logged[0]["record"] == "spf"


async def test_status_page_shows_the_posture_per_domain(
    posture_daemon, browser: Browser, tmp_path
) -> None:
    d = posture_daemon
    wait_for(
        "posture reports on the page",
        lambda: (
            "posture-good.test" in http(f"{d.url}/")[1]
            and "not checked yet" not in http(f"{d.url}/")[1]
        ),
        30,
    )
    async with browser.tab(1366, 768) as tab:
        await tab.goto(f"{d.url}/?refresh=0")
        sections = await tab.js(
            "[...document.querySelectorAll('section.posture')].map(s => ({id: s.id, "
            "head: s.querySelector('h3').innerText, rows: s.querySelectorAll('tbody tr').length, "
            "visible: s.getBoundingClientRect().width > 600}))"
        )
        await tab.screenshot(artefacts(tmp_path) / "posture-section.png", full=True)
    by_id = {s["id"]: s for s in sections}
    assert set(by_id) == {"posture-change.test", "posture-good.test"}
    assert by_id["posture-good.test"]["head"].split()[0] == "OK"
    # Every check but spf_ip (the daemon knows no sending IP of its own: probes explain that).
    assert by_id["posture-good.test"]["rows"] == 11 and by_id["posture-good.test"]["visible"]
    # change.test publishes no DKIM selectors: critical, and the page says so first.
    assert by_id["posture-change.test"]["head"].split()[0] == "CRITICAL"


def test_reload_stops_and_starts_domains(
    posture_daemon, posture_dns: PostureDns, posture_ca
) -> None:
    d = posture_daemon
    _ca, ca_file = posture_ca
    doc = _config(posture_dns, ca_file)
    doc["targets"][0]["posture"] = {"enabled": False}  # change.test: off
    doc["targets"][2]["posture"] = {}  # syntax.test: on, from defaults
    d.write_config(doc)
    status, body, _ = http(f"{d.url}/-/reload", method="POST")
    assert status == 200, body

    def domains() -> set[str]:
        return {x["domain"] for x in json.loads(http(f"{d.url}/api/posture")[1])["domains"]}

    wait_for("the reloaded set of domains", lambda: domains() == {"good.test", "syntax.test"}, 10)

    def syntax_checked() -> bool:
        return (
            value(_metrics(d.url), "relayprobe_posture_ok", domain="syntax.test", check="spf") == 0
        )

    wait_for("syntax.test's first run (its SPF record has a syntax error)", syntax_checked, 30)
    assert not any(("domain", "change.test") in lbl for (_n, lbl) in _metrics(d.url))


def test_the_alerts_fire_in_a_real_prometheus(
    posture_daemon, posture_dns: PostureDns, tmp_path
) -> None:
    """helm/rules/relayprobe.rules.yml unchanged in Prometheus (1 s scrape and evaluation),
    scraping the daemon: a failed check fires at once, a changed record after the change only."""
    from tests.system.test_prometheus_signals import RULES

    d = posture_daemon
    target = d.url.removeprefix("http://")
    with running_prometheus(tmp_path, [target], job="mail-probes", rules=RULES) as prom:

        def firing(name: str) -> set[tuple[str, str]]:
            return {
                (a["labels"]["domain"], a["labels"].get("check") or a["labels"].get("record"))
                for a in prom.alerts()
                if a["labels"]["alertname"] == name and a["state"] == "firing"
            }

        # change.test publishes no DKIM selector and no MX (critical, warning); good.test is fine.
        expected = {
            ("change.test", "dkim:selector1"),
            ("change.test", "dkim:selector2"),
            ("change.test", "mx"),
        }
        wait_for(
            f"RelayProbePostureCheckFailed firing for exactly {sorted(expected)}",
            lambda: firing("RelayProbePostureCheckFailed") == expected,
            40,
        )
        assert firing("RelayProbeDnsRecordChanged") == set()  # first sight is the baseline
        posture_dns.set_change(AFTER)
        wait_for(
            "RelayProbeDnsRecordChanged firing for change.test's SPF record alone",
            lambda: firing("RelayProbeDnsRecordChanged") == {("change.test", "spf")},
            40,
        )
        info = next(
            a for a in prom.alerts() if a["labels"]["alertname"] == "RelayProbeDnsRecordChanged"
        )
        assert info["labels"]["severity"] == "info"
