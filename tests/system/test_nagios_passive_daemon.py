"""check_m365_relay --from-exporter against the real relayprobe daemon on the local mail system."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.system.daemon_helpers import Daemon, running_daemon, wait_for
from tests.system.probe_configs import target_dict
from tests.system.test_nagios_cli import run

pytestmark = pytest.mark.testbed

REPLY = (
    "550 5.1.1 <inbox+reject@probe.test>: Recipient address rejected:"
    " RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup (testbed +reject)"
)


@pytest.fixture(scope="module")
def daemon(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # good runs once at start-up (interval 1h), so its result only ages from then on. The
    # scheduler spreads first runs over the shortest interval: broken's 3 s keeps that short.
    good = target_dict(testbed, "good", interval="1h", jitter=0, timeout="15s")
    broken = target_dict(
        testbed, "broken", interval="3s", jitter=0, timeout="15s", rcpt_to="inbox+reject@probe.test"
    )
    doc = {
        "instance": f"test-nagios-passive-{os.getpid()}-{time.monotonic_ns() % 10**6}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [good, broken],
    }
    tmp = tmp_path_factory.mktemp("nagios-passive")
    with running_daemon(testbed, tmp, doc, "--shutdown.grace", "5") as d:
        yield d


def result_of(daemon: Daemon, name: str) -> dict[str, Any]:
    """The daemon's finished result for target `name` from /api/results, once there is one."""
    try:
        return wait_for(f"a result for {name}", lambda: daemon.results().get(name), 20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; daemon log: {daemon.log.read_text()[-2000:]}") from None


def age_of(result: dict[str, Any]) -> float:
    finished = dt.datetime.fromisoformat(result["finished_at"].replace("Z", "+00:00"))
    return (dt.datetime.now(dt.UTC) - finished).total_seconds()


def passive(daemon: Daemon, target: str, *more: str) -> tuple[str, int, str]:
    return run("--from-exporter", daemon.url, "--target", target, *more)


def s(value: float) -> str:
    """The plugin's duration format in text (perfdata carries the value rounded to ms)."""
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def test_fresh_good_result_is_ok_with_perfdata(daemon: Daemon) -> None:
    result = result_of(daemon, "good")
    t = result["timings"]
    assert result["success"] and t["delivery_seconds"] is not None, result
    before = math.floor(age_of(result))
    out, code, err = passive(daemon, "good", "-w", "20", "-c", "30")
    after = math.floor(age_of(result))
    phases = " ".join(
        f"{p}={round(t[p + '_seconds'], 3)}s;;;0"
        for p in ("smtp_connect", "smtp_tls", "smtp_auth", "smtp_submit", "total")
    )
    d = t["delivery_seconds"]
    expected = [
        f"M365 RELAY OK - good: delivered to INBOX in {s(d)}"
        f" | delivery={round(d, 3)}s;20;30;0 {phases} age={age}s;;;0\n"
        f"\\_[OK] SMTP 127.0.0.1:10587: connect {s(t['smtp_connect_seconds'])},"
        f" tls {s(t['smtp_tls_seconds'])}, auth {s(t['smtp_auth_seconds'])},"
        f" submit {s(t['smtp_submit_seconds'])}\n"
        f"\\_[OK] delivery: INBOX (inbox) after {s(d)}\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=none\n"
        f"\\_[OK] result: {age}s old (max 900s) from {daemon.url}/api/results\n"
        for age in range(before, after + 1)
    ]
    # The plugin shows exactly the daemon's run: its timings, verdict and a fresh age.
    assert (out, code, err) in [(e, 0, "") for e in expected], (out, result)


def test_broken_target_is_critical_naming_the_reason(daemon: Daemon) -> None:
    result = result_of(daemon, "broken")
    assert (result["stage"], result["reason"]) == ("submit", "smtp_rejected"), result
    out, code, err = passive(daemon, "broken")
    lines = out.splitlines()
    assert (code, err) == (2, ""), out
    # broken runs every 3 s: the plugin may read a later run than `result`, so times are patterns.
    assert re.fullmatch(
        r"M365 RELAY CRITICAL - broken: relay 127\.0\.0\.1:10587 rejected the mail \(550 5\.1\.1\)"
        r" \| smtp_connect=[\d.]+s;;;0 smtp_tls=[\d.]+s;;;0 smtp_auth=[\d.]+s;;;0 age=\d+s;;;0",
        lines[0],
    ), out
    assert re.fullmatch(
        r"\\_\[CRITICAL\] SMTP 127\.0\.0\.1:10587: connect [\d.]+s, tls [\d.]+s, auth [\d.]+s,"
        r" failed at submit",
        lines[1],
    ), out
    assert lines[2] == f"   reply: {REPLY}"
    assert re.fullmatch(
        rf"\\_\[OK\] result: \d+s old \(max 900s\) from {daemon.url}/api/results", lines[3]
    ), out
    assert lines[4:] == [
        f"message: submit 127.0.0.1:10587: RCPT TO refused: {REPLY}",
        "remedy: rcpt_to does not exist: check the address",
    ]
    assert lines[4] == f"message: {result['message']}"


def test_result_older_than_max_age_is_stale_and_unknown_by_default(daemon: Daemon) -> None:
    result = result_of(daemon, "good")
    wait_for("good's result to be 1.5 s old", lambda: age_of(result) > 1.5, 5)
    before = math.floor(age_of(result))
    out, code, err = passive(daemon, "good", "--max-age", "1")
    after = math.floor(age_of(result))
    expected = [
        f"M365 RELAY UNKNOWN - good: last result is {age}s old (max 1s) | age={age}s;;;0\n"
        f"\\_[UNKNOWN] result: from {daemon.url}/api/results, finished {result['finished_at']}\n"
        f"last result (not evaluated): ok ok: {result['message']}\n"
        "remedy: check that relayprobe is running and probing this target (its log and"
        " /-/healthy); --max-age must exceed the probe interval plus its timeout\n"
        for age in range(before, after + 1)
    ]
    assert (out, code, err) in [(e, 3, "") for e in expected], (out, result)
    out, code, _ = passive(daemon, "good", "--max-age", "1", "--stale-state", "critical")
    assert code == 2 and out.startswith("M365 RELAY CRITICAL - good: last result is "), out
    # The same result within --max-age is evaluated, not stale.
    assert passive(daemon, "good", "--max-age", "900")[1] == 0
