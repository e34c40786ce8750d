"""mailbox.protocol graph and message trace without servers: config, errors, trace, presentation."""

from __future__ import annotations

import email.utils
import io
import time
from pathlib import Path
from typing import Any

import pytest

from exporters.metrics import exposition
from exporters.statuspage.trace import trace_section
from exporters.store import ResultStore, TargetSpec
from nagios.contexts import Observation
from nagios.options import parse_options
from nagios.output import render
from probe.config import ConfigError, parse_config
from probe.config.clouds import CLOUDS
from probe.graph.client import GraphError, _shown, odata_quote, retry_after_seconds
from probe.graph.trace import TraceLimiter, _detail, apply_trace, wants_trace
from probe.graph.watch import _header_block, graph_folder
from probe.result import (
    TRACE_STATUSES,
    ProbeResult,
    Reason,
    SmtpReceipt,
    Stage,
    Status,
    Trace,
    TraceEvent,
)
from relayprobe.trace import EXIT, run_trace
from tests.results import NOW, probe_result

APP = {
    "method": "oauth2",
    "username": "probe@contoso.com",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "11111111-1111-1111-1111-111111111111",
    "client_secret": "not-a-real-secret-0123456789",
}


def _config(mailbox: dict[str, Any], **target: Any) -> Any:
    t = {
        "name": "t",
        "smtp": {
            "host": "smtp.example",
            "auth": {"method": "password", "username": "a@b.c", "password": "p"},
        },
        "mail_from": "probe@contoso.com",
        "rcpt_to": "probe@contoso.com",
        "mailbox": mailbox,
        **target,
    }
    return parse_config({"tag_secret": "x" * 24, "targets": [t]}, base_dir=Path("/"), environ={})


def _errors(mailbox: dict[str, Any], **target: Any) -> list[str]:
    with pytest.raises(ConfigError) as failed:
        _config(mailbox, **target)
    return failed.value.errors


# -- config --------------------------------------------------------------------------------------
def test_a_graph_mailbox_takes_host_scope_and_user_from_its_cloud() -> None:
    m = _config({"protocol": "graph", "auth": APP}).targets[0].mailbox
    assert (m.host, m.port, m.security) == ("graph.microsoft.com", 443, "tls")
    assert m.graph_url == "https://graph.microsoft.com"
    assert m.auth.scope == "https://graph.microsoft.com/.default"
    assert m.graph_user == "probe@contoso.com"
    m = _config({"protocol": "graph", "auth": APP}, cloud="gcc_high").targets[0].mailbox
    assert m.graph_url == "https://graph.microsoft.us"
    assert m.auth.scope == "https://graph.microsoft.us/.default"


def test_every_cloud_has_a_graph_root() -> None:
    roots = {name: c.graph for name, c in CLOUDS.items()}
    assert roots == {
        "global": "https://graph.microsoft.com",
        "gcc": "https://graph.microsoft.com",
        "gcc_high": "https://graph.microsoft.us",
        "dod": "https://dod-graph.microsoft.us",
        "china": "https://microsoftgraph.chinacloudapi.cn",
    }
    assert "graph" in CLOUDS["gcc"].unverified  # no Microsoft page names GCC's root


def test_imap_only_and_graph_only_keys_are_errors_naming_the_key() -> None:
    assert _errors({"protocol": "graph", "host": "h", "port": 993, "auth": APP}) == [
        'targets[0].mailbox.host: only for protocol "imap" (a graph mailbox uses graph_url)',
        'targets[0].mailbox.port: only for protocol "imap" (a graph mailbox uses graph_url)',
    ]
    assert _errors({"host": "imap.example", "user": "u@x", "auth": APP}) == [
        'targets[0].mailbox.user: only for protocol "graph"'
    ]


def test_a_graph_mailbox_needs_app_only_oauth() -> None:
    password = {"method": "password", "username": "u@x", "password": "p"}
    (error,) = _errors({"protocol": "graph", "auth": password})
    assert error.startswith('targets[0].mailbox.auth.method: protocol "graph" needs app-only')


def test_trace_is_global_cloud_and_app_only() -> None:
    t = _config({"protocol": "graph", "auth": APP}, trace={"enabled": True}).targets[0]
    assert t.trace.enabled and t.trace.max_per_minute == 4
    errs = _errors({"protocol": "graph", "auth": APP}, cloud="dod", trace={"enabled": True})
    assert errs == [
        "targets[0].trace.enabled: Microsoft's message trace API exists in the global cloud "
        'only, not in cloud "dod"; turn trace off for this target'
    ]
    imap_password = {
        "host": "imap.example",
        "auth": {"method": "password", "username": "u@x", "password": "p"},
    }
    (err,) = _errors(imap_password, trace={"enabled": True})
    assert "app-only OAuth client" in err
    assert _config(imap_password).targets[0].trace.enabled is False  # opt-in


def test_graph_folder_names() -> None:
    assert graph_folder("INBOX") == "inbox" and graph_folder("Junk Email") == "junkemail"
    assert graph_folder("JunkEmail") == "junkemail" and graph_folder("Probe results") is None


# -- the HTTP client -----------------------------------------------------------------------------
def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= (retry_after_seconds(later) or 0) <= 31
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None


def test_errors_name_call_and_answer_and_cut_state_tokens() -> None:
    url = (
        "https://graph.microsoft.com/v1.0/users/x/mailFolders/inbox/messages/delta?$deltatoken="
        + "A" * 80
    )
    err = GraphError(
        "throttled", "GET", _shown(url), 429, "ApplicationThrottled", "over limit", retry_after=3
    )
    assert str(err).startswith("GET https://graph.microsoft.com/v1.0/users/x/mailFolders/inbox")
    assert "HTTP 429 ApplicationThrottled: over limit" in str(err)
    assert "A" * 20 not in str(err)
    assert odata_quote("o'brien@x") == "'o''brien@x'"


def test_header_block_rebuilds_headers_for_the_verdict_parser() -> None:
    block = _header_block([{"name": "Subject", "value": "x"}, {"name": "X-A", "value": "1"}])
    assert block == b"Subject: x\r\nX-A: 1\r\n"


# -- message trace -------------------------------------------------------------------------------
def _timed_out() -> ProbeResult:
    return probe_result(
        status=Status.CRITICAL,
        stage=Stage.DELIVER,
        reason=Reason.DELIVERY_TIMEOUT,
        message='deliver: the relay accepted the probe (250 ok) but it was not in "inbox"',
        smtp=SmtpReceipt("smtp.office365.com", 587, reply_code=250, reply="ok"),
        probe_id="abc",
    )


def _trace(status: str, *events: tuple[str, str]) -> Trace:
    evs = [TraceEvent(NOW, e, None, d) for e, d in events]
    return Trace(
        status, NOW, f"Microsoft's message trace: {status}", "tid", evs, _detail(status, evs)
    )


def test_quarantined_becomes_its_own_reason_with_a_remedy() -> None:
    trace = _trace("quarantined", ("Receive", "received"), ("Quarantine", "High confidence phish"))
    result = apply_trace(_timed_out(), trace)
    assert (result.status, result.stage, result.reason) == (
        Status.CRITICAL,
        Stage.DELIVER,
        Reason.QUARANTINED,
    )
    assert "High confidence phish" in result.message
    assert result.remedy is not None and "Review > Quarantine" in result.remedy


def test_failed_and_pending_explain_a_timeout_and_keep_its_reason() -> None:
    failed = _trace("failed", ("Receive", "r"), ("Fail", "550 5.7.1 Delivery not authorized"))
    result = apply_trace(_timed_out(), failed)
    assert result.reason is Reason.DELIVERY_TIMEOUT
    assert "message trace: failed" in result.message and "5.7.1" in result.message
    assert result.remedy is not None and "relayprobe explain" in result.remedy
    pending = apply_trace(_timed_out(), _trace("pending", ("Defer", "deferred: 451 4.4.0")))
    assert "message trace: pending" in pending.message
    delivered = apply_trace(_timed_out(), _trace("delivered", ("Deliver", "ok")))
    assert delivered.reason is Reason.DELIVERY_TIMEOUT and delivered.trace is not None


def test_only_timeouts_junk_and_late_probes_are_traced() -> None:
    assert wants_trace(_timed_out())
    assert wants_trace(probe_result(reason=Reason.JUNKED, status=Status.CRITICAL))
    assert wants_trace(probe_result(reason=Reason.LATENCY_WARNING, status=Status.WARNING))
    assert not wants_trace(probe_result())
    assert not wants_trace(probe_result(reason=Reason.AUTH_FAILED, status=Status.CRITICAL))


def test_the_limiter_spends_a_per_minute_budget() -> None:
    limiter = TraceLimiter()
    assert [limiter.allow(3) for _ in range(4)] == [True, True, True, False]
    limiter.reset()
    assert limiter.allow(3)


def test_a_trace_survives_the_json_round_trip() -> None:
    result = apply_trace(_timed_out(), _trace("quarantined", ("Quarantine", "q")))
    data = result.to_dict()
    assert (
        data["trace"]["status"] == "quarantined"
        and data["trace"]["events"][0]["event"] == "Quarantine"
    )
    assert ProbeResult.from_dict(data).to_dict() == data
    assert probe_result().to_dict()["trace"] is None


# -- presentation ----------------------------------------------------------------------------------
def test_trace_counters_are_born_at_zero_for_trace_targets() -> None:
    store = ResultStore()
    store.set_targets([TargetSpec("t", 60.0), TargetSpec("u", 60.0)])
    store.trace_targets(["t"])  # what the daemon does for targets with trace.enabled

    def trace_lines() -> list[str]:
        text = exposition(store, version="9.9", reload_ok=lambda: True).decode()
        return [line for line in text.splitlines() if line.startswith("relayprobe_trace_total{")]

    born = trace_lines()
    assert sorted(born) == sorted(
        f'relayprobe_trace_total{{target="t",status="{s}"}} 0' for s in TRACE_STATUSES
    )  # target u has trace off: no series
    traced = apply_trace(_timed_out(), _trace("quarantined", ("Quarantine", "q")))
    traced.target = "t"
    store.record(traced)
    assert 'relayprobe_trace_total{target="t",status="quarantined"} 1' in trace_lines()


def test_nagios_long_output_lists_the_trace() -> None:
    result = apply_trace(
        _timed_out(), _trace("quarantined", ("Receive", "received"), ("Quarantine", "phish"))
    )
    opts = parse_options(["--config", "relayprobe.yaml", "--target", "m365-submission"])
    text = render(Observation(result), opts).text
    assert "trace: Microsoft's message trace: quarantined" in text
    assert (
        f"   {NOW.isoformat(timespec='milliseconds').replace('+00:00', 'Z')} Quarantine: phish"
        in text
    )


def test_status_page_section_escapes_what_microsoft_wrote() -> None:
    result = apply_trace(_timed_out(), _trace("failed", ("Fail", "<b>550</b> 5.1.1")))
    html = trace_section(result)
    assert "Message trace" in html and "&lt;b&gt;550&lt;/b&gt;" in html and "<b>550" not in html
    assert trace_section(probe_result()) == ""


def test_trace_command_needs_a_probe_id_or_a_daemon(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "tag_secret: xxxxxxxxxxxxxxxxxxxxxxxx\ntargets:\n- name: t\n  smtp: {host: smtp.example}\n"
        "  mail_from: probe@contoso.com\n  rcpt_to: probe@contoso.com\n"
        "  mailbox:\n    protocol: graph\n    auth: {method: oauth2, username: probe@contoso.com,"
        " tenant_id: contoso.onmicrosoft.com, client_id: c, client_secret: s}\n"
    )
    err = io.StringIO()
    assert run_trace(str(config), "t", out=io.StringIO(), err=err) == 3
    assert "--probe-id" in err.getvalue() and "--daemon" in err.getvalue()
    assert {EXIT[s] for s in TRACE_STATUSES} <= {0, 1, 2, 3} and set(EXIT) == set(TRACE_STATUSES)


def test_graph_url_gives_host_and_port_for_the_daemons_mailbox_key() -> None:
    mailbox = {"protocol": "graph", "graph_url": "https://127.0.0.1:8443", "auth": APP}
    m = _config(mailbox).targets[0].mailbox
    assert (m.host, m.port, m.graph_url) == ("127.0.0.1", 8443, "https://127.0.0.1:8443")
    (err,) = _errors({**mailbox, "graph_url": "http://graph.example"})
    assert err.startswith("targets[0].mailbox.graph_url: invalid value")


def test_the_stand_ins_trace_follows_postfix_through_hold_relay_and_lmtp() -> None:
    """The Graph stand-in's message trace (tests/graph/postfixlog.py) on Postfix's own lines."""
    from tests.graph.postfixlog import parse

    log = "\n".join(
        [
            "Dec 08 00:15:59 smtp postfix/submission/smtpd[11618]: NOQUEUE: hold: RCPT from "
            "localhost[127.0.0.1]: <a+h@probe.test>: Recipient address testbed switch hold; "
            "from=<p@probe.test> to=<a+h@probe.test> proto=ESMTP helo=<localhost>",
            "Dec 08 00:15:59 smtp postfix/submission/smtpd[11618]: E26952: client=localhost[127.0.0.1]",
            "Dec 08 00:15:59 smtp postfix/cleanup[11625]: E26952: message-id=<m1@probe.test>",
            "Dec 08 00:16:00 smtp postfix/submission/smtpd[11619]: 0A1B2C: client=localhost[127.0.0.1]",
            "Dec 08 00:16:00 smtp postfix/cleanup[11625]: 0A1B2C: message-id=<m2@probe.test>",
            "Dec 08 00:16:00 smtp postfix/qmgr[1]: 0A1B2C: from=<p@probe.test>, size=1411, nrcpt=1",
            "Dec 08 00:16:00 smtp postfix/tbrelay/smtp[2]: 0A1B2C: to=<a@probe.test>, "
            "relay=127.0.0.1[127.0.0.1]:10025, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 3C4D5E)",
            "Dec 08 00:16:00 mx postfix/mx/smtpd[3]: 3C4D5E: client=smtp.probe.test[127.0.0.2]",
            "Dec 08 00:16:00 smtp postfix/cleanup[11625]: 3C4D5E: message-id=<m2@probe.test>",
            "Dec 08 00:16:01 smtp postfix/lmtp[4]: 3C4D5E: to=<a@probe.test>, "
            "relay=127.0.0.1[127.0.0.1]:10024, dsn=2.0.0, status=sent (250 2.0.0 Saved)",
            "Dec 08 00:16:02 smtp postfix/submission/smtpd[11620]: 5E6F7A: client=localhost[127.0.0.1]",
            "Dec 08 00:16:02 smtp postfix/cleanup[11625]: 5E6F7A: message-id=<m3@probe.test>",
            "Dec 08 00:16:03 smtp postfix/tbrelay/smtp[2]: 5E6F7A: to=<b@probe.test>, relay=none, "
            "dsn=5.1.1, status=bounced (host said: 550 5.1.1 unknown)",
        ]
    )
    records = {r.message_id: r for r in parse(log)}
    held, delivered, bounced = (
        records["<m1@probe.test>"],
        records["<m2@probe.test>"],
        records["<m3@probe.test>"],
    )
    assert (held.status, held.recipient, held.sender) == (
        "pending",
        "a+h@probe.test",
        "p@probe.test",
    )
    assert [e for _t, e, _d in held.events] == ["Receive", "Defer"]
    assert delivered.status == "delivered" and delivered.queue_ids == ["0A1B2C", "3C4D5E"]
    assert [e for _t, e, _d in delivered.events] == ["Receive", "Send", "Deliver"]
    assert bounced.status == "failed" and "550 5.1.1" in bounced.events[-1][2]
    quarantined = {r.message_id: r for r in parse(log, quarantined={"a+h@probe.test"})}
    assert quarantined["<m1@probe.test>"].status == "quarantined"
