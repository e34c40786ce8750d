"""Golden tests: the plugin's full stdout and exit code for each scenario (presentation is pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from nagios.argspec import UsageError
from nagios.contexts import Observation
from nagios.options import parse_options
from nagios.output import render, timeout_problem, usage_problem
from probe.result import (
    Arrival,
    AuthVerdict,
    HeaderVerdict,
    ProbeResult,
    Reason,
    SpamVerdict,
    Stage,
    Status,
    Timings,
)
from tests.results import m365_delivered as delivered
from tests.results import probe_result, receipt

T0 = dt.datetime(2026, 11, 27, 14, 0, 0, tzinfo=dt.UTC)
CONFIG_ARGS = ["--config", "relayprobe.yaml", "--target", "m365-submission"]
PERF_PHASES = (
    "smtp_connect=0.012s;;;0 smtp_tls=0.034s;;;0 smtp_auth=0.101s;;;0 smtp_submit=0.245s;;;0"
)
SMTP_OK = (
    "\\_[OK] SMTP smtp.office365.com:587: connect 0.012s, tls 0.034s, auth 0.101s, submit 0.245s"
)


def out(result: ProbeResult, *args: str) -> tuple[str, int]:
    rendered = render(Observation(result), parse_options([*CONFIG_ARGS, *args]))
    return rendered.text, rendered.exit_code


def test_ok_prints_summary_perfdata_and_one_line_per_phase() -> None:
    assert out(delivered(), "-w", "60", "-c", "300", "--max-scl", "4") == (
        "M365 RELAY OK - m365-submission: delivered to INBOX in 12.4s"
        f" | delivery=12.4s;60;300;0 {PERF_PHASES} total=12.8s;;;0 scl=1;~:4;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[OK] delivery: INBOX (inbox) after 12.4s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n",
        0,
    )


def test_latency_over_warning_range_is_warning() -> None:
    assert out(delivered(75.2), "-w", "60", "-c", "300") == (
        "M365 RELAY WARNING - m365-submission: delivery took 75.2s, outside range 0:60"
        f" | delivery=75.2s;60;300;0 {PERF_PHASES} total=75.6s;;;0 scl=1;;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[WARNING] delivery: INBOX (inbox) after 75.2s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n",
        1,
    )


def test_latency_over_critical_range_is_critical_and_critical_is_checked_first() -> None:
    assert out(delivered(320.5), "-w", "60", "-c", "300") == (
        "M365 RELAY CRITICAL - m365-submission: delivery took 320.5s, outside range 0:300"
        f" | delivery=320.5s;60;300;0 {PERF_PHASES} total=320.9s;;;0 scl=1;;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[CRITICAL] delivery: INBOX (inbox) after 320.5s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n",
        2,
    )


def test_inverted_range_alerts_inside() -> None:
    text, code = out(delivered(15.0), "-w", "@10:20")
    assert code == 1
    assert text.splitlines()[0] == (
        "M365 RELAY WARNING - m365-submission: delivery took 15.0s, inside range @10:20"
        f" | delivery=15.0s;@10:20;;0 {PERF_PHASES} total=15.4s;;;0 scl=1;;;-1;9"
    )
    assert out(delivered(25.0), "-w", "@10:20")[1] == 0


def test_junked_with_junk_severity_option() -> None:
    junked = delivered(arrival=Arrival("Junk Email", "junk"))
    assert out(junked, "--junk-severity", "warning") == (
        "M365 RELAY WARNING - m365-submission: delivered to junk folder Junk Email"
        f" | delivery=12.4s;;;0 {PERF_PHASES} total=12.8s;;;0 scl=1;;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[WARNING] delivery: Junk Email (junk) after 12.4s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n",
        1,
    )


def test_junked_verdict_of_the_probe_stands_without_the_option() -> None:
    junked = delivered(
        arrival=Arrival("Junk Email", "junk"),
        status=Status.CRITICAL,
        reason=Reason.JUNKED,
        message='the probe landed in the junk folder "Junk Email"',
    )
    assert out(junked) == (
        "M365 RELAY CRITICAL - m365-submission: delivered to junk folder Junk Email"
        f" | delivery=12.4s;;;0 {PERF_PHASES} total=12.8s;;;0 scl=1;;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[CRITICAL] delivery: Junk Email (junk) after 12.4s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n"
        'message: the probe landed in the junk folder "Junk Email"\n',
        2,
    )


def test_auth_result_mismatch_names_each_wrong_result() -> None:
    failing = delivered(
        verdict=HeaderVerdict(
            AuthVerdict(
                "pass", "fail", "fail", "quarantine", "fail", "001", "Authentication-Results"
            ),
            SpamVerdict(scl=5),
        )
    )
    assert out(
        failing, "--expect-dkim", "pass", "--expect-dmarc", "pass,bestguesspass", "--max-scl", "4"
    ) == (
        "M365 RELAY CRITICAL - m365-submission: unexpected dkim=fail (expected pass),"
        " dmarc=fail (expected pass or bestguesspass)"
        f" | delivery=12.4s;;;0 {PERF_PHASES} total=12.8s;;;0 scl=5;~:4;;-1;9\n"
        f"{SMTP_OK}\n"
        "\\_[OK] delivery: INBOX (inbox) after 12.4s\n"
        "\\_[CRITICAL] authentication: spf=pass dkim=fail dmarc=fail compauth=fail\n"
        "\\_[WARNING] spam: SCL 5\n",
        2,
    )


def test_relay_rejection_is_critical_and_names_host_and_reply() -> None:
    rejected = probe_result(
        status=Status.CRITICAL,
        stage=Stage.SUBMIT,
        reason=Reason.SEND_AS_DENIED,
        message="submit: smtp.office365.com:587 refused MAIL FROM <probe@contoso.com>: "
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        remedy="grant the authenticating mailbox Send As on probe@contoso.com",
        timings=Timings(0.012, 0.034, 0.101, None),
        smtp=receipt(550, "5.7.60 SMTP; Client does not have permissions to send as this sender"),
    )
    assert out(rejected, "-w", "60", "-c", "300") == (
        "M365 RELAY CRITICAL - m365-submission: send-as denied by smtp.office365.com:587"
        " (550 5.7.60) | smtp_connect=0.012s;;;0 smtp_tls=0.034s;;;0 smtp_auth=0.101s;;;0\n"
        "\\_[CRITICAL] SMTP smtp.office365.com:587: connect 0.012s, tls 0.034s, auth 0.101s,"
        " failed at submit\n"
        "   reply: 550 5.7.60 SMTP; Client does not have permissions to send as this sender\n"
        "message: submit: smtp.office365.com:587 refused MAIL FROM <probe@contoso.com>:"
        " 550 5.7.60 SMTP; Client does not have permissions to send as this sender\n"
        "remedy: grant the authenticating mailbox Send As on probe@contoso.com\n",
        2,
    )


def test_auth_failure_is_critical_and_a_pipe_in_the_reply_cannot_cut_the_output() -> None:
    denied = probe_result(
        status=Status.CRITICAL,
        stage=Stage.AUTH,
        reason=Reason.AUTH_FAILED,
        message="auth: smtp.office365.com:587 rejected AUTH LOGIN for probe@contoso.com: "
        "535 5.7.139 Authentication unsuccessful",
        remedy="check the password in --password-file",
        timings=Timings(0.012, 0.034, None, None),
        smtp=receipt(535, "5.7.139 Authentication unsuccessful | basic auth is disabled"),
    )
    assert out(denied) == (
        "M365 RELAY CRITICAL - m365-submission: SMTP AUTH rejected by smtp.office365.com:587"
        " (535 5.7.139) | smtp_connect=0.012s;;;0 smtp_tls=0.034s;;;0\n"
        "\\_[CRITICAL] SMTP smtp.office365.com:587: connect 0.012s, tls 0.034s, failed at auth\n"
        "   reply: 535 5.7.139 Authentication unsuccessful / basic auth is disabled\n"
        "message: auth: smtp.office365.com:587 rejected AUTH LOGIN for probe@contoso.com:"
        " 535 5.7.139 Authentication unsuccessful\n"
        "remedy: check the password in --password-file\n",
        2,
    )


def test_delivery_deadline_missed_is_critical() -> None:
    lost = probe_result(
        status=Status.CRITICAL,
        stage=Stage.DELIVER,
        reason=Reason.DELIVERY_TIMEOUT,
        message='deliver: the relay accepted the probe (250 2.0.0 OK) but it was not in "INBOX"'
        " of probe@fabrikam.com within 300 s",
        remedy="look for the message in Microsoft's message trace",
        timings=Timings(0.012, 0.034, 0.101, 0.245, None, 300.4),
        smtp=receipt(),
    )
    assert out(lost, "-c", "300") == (
        "M365 RELAY CRITICAL - m365-submission: mail not delivered before the deadline"
        f" | {PERF_PHASES} total=300.4s;;;0\n"
        f"{SMTP_OK}\n"
        "\\_[CRITICAL] delivery: not found in the watched folders\n"
        'message: deliver: the relay accepted the probe (250 2.0.0 OK) but it was not in "INBOX"'
        " of probe@fabrikam.com within 300 s\n"
        "remedy: look for the message in Microsoft's message trace\n",
        2,
    )


def test_plugin_timeout_is_unknown_by_default() -> None:
    rendered = render(timeout_problem(30, "unknown", "config", 300.0), None)
    assert (rendered.text, rendered.exit_code) == (
        "M365 RELAY UNKNOWN - plugin timed out after 30s (-t)\n"
        "\\_[UNKNOWN] the round trip may take up to the delivery timeout (300s) plus the SMTP"
        " phases: raise -t above it (and the core's check timeout above -t) or lower the"
        " delivery timeout\n",
        3,
    )


def test_plugin_timeout_state_can_be_overridden() -> None:
    rendered = render(timeout_problem(8, "critical", "passive", None), None)
    assert (rendered.text, rendered.exit_code) == (
        "M365 RELAY CRITICAL - plugin timed out after 8s (-t)\n"
        "\\_[CRITICAL] the exporter did not answer in time: check that relayprobe is running"
        " and reachable\n",
        2,
    )


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (
            ["-w", "abc"],
            "invalid -w/--warning range 'abc' (use e.g. 60, 10:, ~:60, 10:20 or @10:20)",
        ),
        (
            ["-c", "20:10"],
            "invalid -c/--critical range '20:10' (start 20 must not be greater than"
            " end 10; use e.g. 60, 10:, ~:60, 10:20 or @10:20)",
        ),
        (
            ["-w", "1:2:3"],
            "invalid -w/--warning range '1:2:3' (use e.g. 60, 10:, ~:60, 10:20 or @10:20)",
        ),
    ],
)
def test_bad_threshold_syntax_is_unknown(args: list[str], why: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_options([*CONFIG_ARGS, *args])
    rendered = render(usage_problem(str(caught.value)), None)
    assert (rendered.text, rendered.exit_code) == (
        f"M365 RELAY UNKNOWN - invalid options: {why}\n"
        "usage: check_m365_relay --config FILE --target NAME [-w RANGE] [-c RANGE] ...\n"
        "       check_m365_relay -H HOST -u USER --rcpt-to ADDR --imap-host HOST ...\n"
        "       check_m365_relay --from-exporter URL --target NAME [--max-age SEC]\n"
        "       check_m365_relay -h (help), -V (version)\n",
        3,
    )


PASSIVE_ARGS = ["--from-exporter", "http://127.0.0.1:9833", "--target", "m365-submission"]


def passive(result: ProbeResult, age: float, *args: str) -> tuple[str, int]:
    finished = T0 + dt.timedelta(seconds=13)
    obs = Observation(result, finished, "http://127.0.0.1:9833/api/results")
    opts = parse_options([*PASSIVE_ARGS, "--max-age", "600", *args])
    rendered = render(obs, opts, now=finished + dt.timedelta(seconds=age))
    return rendered.text, rendered.exit_code


def test_passive_fresh_result_is_evaluated_like_a_live_one() -> None:
    assert passive(delivered(), 42, "-w", "10") == (
        "M365 RELAY WARNING - m365-submission: delivery took 12.4s, outside range 0:10"
        f" | delivery=12.4s;10;;0 {PERF_PHASES} total=12.8s;;;0 scl=1;;;-1;9 age=42s;;;0\n"
        f"{SMTP_OK}\n"
        "\\_[WARNING] delivery: INBOX (inbox) after 12.4s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n"
        "\\_[OK] result: 42s old (max 600s) from http://127.0.0.1:9833/api/results\n",
        1,
    )


def test_passive_stale_result_is_unknown_and_not_evaluated() -> None:
    assert passive(delivered(), 601) == (
        "M365 RELAY UNKNOWN - m365-submission: last result is 601s old (max 600s) | age=601s;;;0\n"
        "\\_[UNKNOWN] result: from http://127.0.0.1:9833/api/results,"
        " finished 2026-11-27T14:00:13.000Z\n"
        "last result (not evaluated): ok ok: delivered to INBOX in 12.40 s;"
        " spf=pass dkim=pass dmarc=pass\n"
        "remedy: check that relayprobe is running and probing this target (its log and"
        " /-/healthy); --max-age must exceed the probe interval plus its timeout\n",
        3,
    )


def test_passive_stale_state_can_be_critical() -> None:
    text, code = passive(delivered(), 3600, "--stale-state", "critical")
    assert code == 2
    assert text.startswith("M365 RELAY CRITICAL - m365-submission: last result is 3600s old")


def test_unreachable_mailbox_says_nothing_was_sent() -> None:
    down = probe_result(
        status=Status.CRITICAL,
        stage=Stage.DELIVER,
        reason=Reason.IMAP_FAILED,
        message="deliver imap outlook.office365.com:993: connection refused; check mailbox.host",
    )
    text, code = out(down)
    assert code == 2
    assert "\\_[CRITICAL] delivery: mailbox not reachable, nothing was sent\n" in text
    assert "not found in the watched folders" not in text
    assert "message: deliver imap outlook.office365.com:993: connection refused" in text
