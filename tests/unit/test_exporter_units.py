"""Exporter parts without a mail system: store + collector exposition, send limits, log formats."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import platform
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.limits import SendGate
from exporters.logs import JsonFormatter, LogfmtFormatter
from exporters.metrics import exposition
from exporters.scheduler import target_spec
from exporters.statuspage import overview_page
from exporters.store import DELIVERY_BUCKETS, ResultStore, TargetSpec
from probe.config import Config, parse_config
from probe.result import CheckResult, ProbeResult, Reason, Status
from tests.results import NOW, delivered, failed, sample_store


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


@pytest.fixture
def store() -> ResultStore:
    return sample_store()


def test_exposition_has_the_contract_values(store):
    m = samples(exposition(store, version="9.9", reload_ok=lambda: False))
    assert m[("relayprobe_success", frozenset({("target", "a")}))] == 1
    assert m[("relayprobe_success", frozenset({("target", "never")}))] == 0
    assert m[("relayprobe_runs_total", frozenset({("target", "a")}))] == 2
    key = frozenset({("target", "b"), ("stage", "auth"), ("reason", "auth_failed")})
    assert m[("relayprobe_failures_total", key)] == 2

    def bucket(le: str) -> float:
        return m[
            (
                "relayprobe_delivery_duration_seconds_bucket",
                frozenset({("target", "a"), ("le", le)}),
            )
        ]

    assert (bucket("0.25"), bucket("0.5"), bucket("30"), bucket("60"), bucket("+Inf")) == (
        0,
        1,
        1,
        2,
        2,
    )
    assert m[("relayprobe_delivery_duration_seconds_sum", frozenset({("target", "a")}))] == 45.3
    assert m[("relayprobe_late_deliveries_total", frozenset({("target", "a")}))] == 1
    assert m[("relayprobe_junk_deliveries_total", frozenset({("target", "a")}))] == 1
    auth = frozenset({("target", "a"), ("method", "dmarc"), ("result", "fail")})
    assert m[("relayprobe_auth_result", auth)] == 1
    assert m[("relayprobe_spam_confidence_level", frozenset({("target", "a")}))] == 5
    expiry = m[("relayprobe_tls_cert_expiry_timestamp_seconds", frozenset({("target", "a")}))]
    assert expiry == (NOW + dt.timedelta(days=30)).timestamp()
    assert (
        m[("relayprobe_tls_cert_expiry_timestamp_seconds", frozenset({("target", "never")}))] == 0
    )
    assert m[("relayprobe_backoff_seconds", frozenset({("target", "b")}))] == 600
    assert m[("relayprobe_probe_interval_seconds", frozenset({("target", "b")}))] == 300
    assert m[("relayprobe_last_success_timestamp_seconds", frozenset({("target", "b")}))] == 0
    assert m[("relayprobe_config_last_reload_successful", frozenset())] == 0
    (info,) = [labels for name, labels in m if name == "relayprobe_build_info"]
    assert {"version": "9.9", "python": platform.python_version()}.items() <= dict(info).items()
    assert dict(info)["aiosmtplib"] != "none" and dict(info)["prometheus_client"] != "none"
    status = {t: m[("relayprobe_status", frozenset({("target", t)}))] for t in ("a", "b", "never")}
    assert status == {"a": 0, "b": 2, "never": 3}
    failed = {t: m[("relayprobe_failed_runs_total", frozenset({("target", t)}))] for t in status}
    assert failed == {"a": 0, "b": 2, "never": 0}  # born at 0: increase() sees the first failure
    assert any(name == "process_open_fds" for name, _ in m)
    phase = frozenset({("target", "b"), ("phase", "smtp_tls")})
    assert m[("relayprobe_phase_duration_seconds", phase)] == 0.02


def test_buckets_span_quarter_second_to_thirty_minutes():
    assert DELIVERY_BUCKETS[0] == 0.25 and DELIVERY_BUCKETS[-1] == 1800
    assert list(DELIVERY_BUCKETS) == sorted(DELIVERY_BUCKETS)


def test_one_target_exposition_leaves_out_the_others_and_self_metrics(store):
    body = exposition(store, version="9.9", reload_ok=lambda: True, only="a").decode()
    assert 'target="a"' in body and 'target="b"' not in body
    assert "relayprobe_build_info" not in body and "config_last_reload" not in body


def test_reload_keeps_state_of_kept_targets_and_drops_removed_ones(store):
    store.set_targets([("a", 30.0), ("new", 60.0)])
    assert store.names() == ["a", "new"]
    assert store.get("a").runs == 2 and store.get("a").interval == 30
    store.record(failed("b"))  # a run that finishes after its target was removed: dropped
    assert store.get("b") is None and not store.record_late("b")


def test_api_results_shape(store):
    results = {r["target"]: r for r in store.results()}
    assert set(results) == {"a", "b"}  # "never" has no result yet
    assert results["a"]["finished_at"] == "2026-11-27T12:01:00.000Z"
    assert results["b"]["reason"] == "auth_failed" and results["b"]["success"] is False
    json.dumps(results)


async def test_send_gate_limits_concurrency():
    gate, active, peak = SendGate(concurrent=3, per_minute=100), 0, 0

    async def one() -> None:
        nonlocal active, peak
        async with gate.hold():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.05)
            active -= 1

    await asyncio.gather(*(one() for _ in range(10)))
    assert peak == 3


async def test_send_gate_limits_messages_per_minute():
    gate = SendGate(concurrent=3, per_minute=4)
    for _ in range(4):
        async with gate.hold():
            pass
    assert not gate.available()  # /probe answers 429 instead of waiting
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # the fifth message waits for the window to move on
        async with asyncio.timeout(0.3):
            async with gate.hold():
                pass
    assert time.monotonic() - started >= 0.29


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {
            "name": "relayprobe.scheduler",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": 'probe failed: 535 "denied"',
        }
    )
    record.__dict__.update(extra)
    return record


def test_logfmt_puts_target_stage_reason_on_one_line():
    line = LogfmtFormatter().format(_record(target="m365", stage="auth", reason="auth_failed"))
    assert "\n" not in line
    assert 'level=error logger=relayprobe.scheduler msg="probe failed: 535 \\"denied\\""' in line
    assert line.endswith("target=m365 stage=auth reason=auth_failed")


def test_json_format_has_the_same_fields():
    doc = json.loads(JsonFormatter().format(_record(target="m365", duration_seconds=1.5)))
    assert doc["level"] == "error" and doc["target"] == "m365" and doc["duration_seconds"] == 1.5
    assert doc["ts"].endswith("Z") and doc["msg"].startswith("probe failed")


def test_cached_exposition_of_200_targets_is_fast():
    from exporters.metrics import CachedExposition

    big = ResultStore()
    big.set_targets([(f"t{i:03d}", 60.0) for i in range(200)])
    for i in range(200):
        big.record(delivered(f"t{i:03d}", 0.4))
        big.record(failed(f"t{i:03d}"))
    cached = CachedExposition(big, version="1", reload_ok=lambda: True)
    cached.render()
    for i in range(20):  # 20 targets ran since the last scrape (200 targets at 1/min, 6 s apart)
        big.record(delivered(f"t{i:03d}", 1.0))
    started = time.perf_counter()
    cached.render()
    assert time.perf_counter() - started < 0.02  # the /metrics budget, with CI headroom


def test_configured_checks_and_thresholds_are_exported_and_counted_from_zero():
    spec = TargetSpec("t", 60.0, (("warning", 10.0), ("critical", 20.0)), ("placement", "spf"))
    store = ResultStore()
    store.set_targets([spec])
    m = samples(exposition(store, version="9.9", reload_ok=lambda: True))
    zero = {
        c: m[("relayprobe_check_failures_total", frozenset({("target", "t"), ("check", c)}))]
        for c in ("placement", "spf")
    }
    assert zero == {"placement": 0, "spf": 0}
    assert (
        m[("relayprobe_threshold_seconds", frozenset({("target", "t"), ("level", "warning")}))]
        == 10
    )
    assert not any(name == "relayprobe_check_ok" for name, _ in m)  # nothing delivered yet
    junked = dataclasses.replace(
        delivered("t", 2.0, placement="junk"),
        status=Status.CRITICAL,
        reason=Reason.JUNKED,
        checks=[
            CheckResult("placement", False, Status.CRITICAL, Reason.JUNKED, "junked"),
            CheckResult("spf", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "spf=fail"),
            CheckResult("dkim", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "gone"),
        ],
    )
    store.record(junked, NOW)
    m = samples(exposition(store, version="9.9", reload_ok=lambda: True))
    ok = {k[1]: v for k, v in m.items() if k[0] == "relayprobe_check_ok"}
    assert ok == {
        frozenset({("target", "t"), ("check", "placement")}): 0,
        frozenset({("target", "t"), ("check", "spf")}): 0,
    }
    failures = {k[1]: v for k, v in m.items() if k[0] == "relayprobe_check_failures_total"}
    assert set(failures.values()) == {1}  # both configured checks counted; dkim is not configured
    assert m[("relayprobe_status", frozenset({("target", "t")}))] == 2


# -- values from the configuration: how targets authenticate, a connector's client certificate ---


def write_client_cert(directory: Path, days: float) -> dt.datetime:
    """A self-signed client certificate (connector.crt, connector.key) valid for ``days`` more
    days; returns its notAfter."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.contoso.com")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_after = now + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    (directory / "connector.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "connector.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return not_after


def m365_config(directory: Path) -> Config:
    """A password submission target and a connector target (client certificate, OAuth mailbox)."""
    mailbox = {
        "host": "outlook.office365.com",
        "auth": {"method": "password", "username": "inbox@contoso.com", "password": "pw"},
    }
    oauth_mailbox = {
        **mailbox,
        "auth": {
            "method": "oauth2",
            "username": "inbox@contoso.com",
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "s",
        },
    }
    targets = [
        {
            "name": "basic",
            "mode": "submission",
            "smtp": {
                "auth": {"method": "password", "username": "app@contoso.com", "password": "pw"}
            },
            "mail_from": "app@contoso.com",
            "rcpt_to": "inbox@contoso.com",
            "mailbox": mailbox,
        },
        {
            "name": "connector",
            "mode": "connector",
            "smtp": {
                "host": "contoso-com.mail.protection.outlook.com",
                "client_cert_file": "connector.crt",
                "client_key_file": "connector.key",
            },
            "mail_from": "scanner@contoso.com",
            "rcpt_to": "inbox@contoso.com",
            "mailbox": oauth_mailbox,
        },
    ]
    data = {"instance": "unit", "tag_secret": "tag-secret-0123456789", "targets": targets}
    return parse_config(data, base_dir=directory, environ={})


def test_auth_info_and_client_cert_expiry_come_from_the_configuration(tmp_path, caplog):
    not_after = write_client_cert(tmp_path, 10)
    config = m365_config(tmp_path)
    store = ResultStore()
    store.set_targets(target_spec(t) for t in config.targets)
    m = samples(exposition(store, version="9.9", reload_ok=lambda: True))
    info = {
        dict(k[1])["target"] + "/" + dict(k[1])["side"]: dict(k[1])
        for k in m
        if k[0] == "relayprobe_auth_info"
    }
    assert set(info) == {"basic/smtp", "basic/imap", "connector/smtp", "connector/imap"}
    assert info["basic/smtp"] == {
        "target": "basic",
        "side": "smtp",
        "method": "password",
        "mode": "submission",
        "cloud": "global",
    }
    assert (info["connector/smtp"]["method"], info["connector/smtp"]["mode"]) == (
        "none",
        "connector",
    )
    assert (info["basic/imap"]["method"], info["connector/imap"]["method"]) == (
        "password",
        "oauth2",
    )
    assert all(v == 1 for k, v in m.items() if k[0] == "relayprobe_auth_info")
    expiry = {
        dict(k[1])["target"]: v
        for k, v in m.items()
        if k[0] == "relayprobe_client_cert_expiry_timestamp_seconds"
    }
    assert expiry == {"connector": not_after.timestamp()}  # no series without a client cert
    assert store.get("basic").basic_auth_submission
    assert not store.get("connector").basic_auth_submission

    # A reload reads the file again: a renewed certificate shows at once.
    renewed = write_client_cert(tmp_path, 90)
    store.set_targets(target_spec(t) for t in m365_config(tmp_path).targets)
    m = samples(exposition(store, version="9.9", reload_ok=lambda: True))
    key = ("relayprobe_client_cert_expiry_timestamp_seconds", frozenset({("target", "connector")}))
    assert m[key] == renewed.timestamp()

    # A file that holds no certificate: 0 (unknown), and the log says why.
    (tmp_path / "connector.crt").write_text("not a certificate\n")
    with caplog.at_level(logging.WARNING, logger="relayprobe.scheduler"):
        store.set_targets(target_spec(t) for t in m365_config(tmp_path).targets)
    m = samples(exposition(store, version="9.9", reload_ok=lambda: True))
    assert m[key] == 0
    assert any("smtp.client_cert_file" in r.getMessage() for r in caplog.records)


def test_imap_cert_expiry_is_kept_across_runs_and_in_api_results():
    store = ResultStore()
    store.set_targets([("a", 60.0)])
    key = ("relayprobe_imap_cert_expiry_timestamp_seconds", frozenset({("target", "a")}))
    assert samples(exposition(store, version="9.9", reload_ok=lambda: True))[key] == 0
    seen = NOW + dt.timedelta(days=40)
    store.record(dataclasses.replace(delivered("a", 1.0), mailbox_cert_not_after=seen), NOW)
    store.record(failed("a"), NOW)  # a run that did not log in keeps the last one seen
    assert samples(exposition(store, version="9.9", reload_ok=lambda: True))[key] == (
        seen.timestamp()
    )
    (result,) = store.results()
    assert result["mailbox_cert_not_after"] is None  # the last run's own field
    data = json.loads(
        json.dumps(dataclasses.replace(delivered("a", 1.0), mailbox_cert_not_after=seen).to_dict())
    )
    assert data["mailbox_cert_not_after"] == "2027-01-06T12:00:00.000Z"
    assert ProbeResult.from_dict(data).mailbox_cert_not_after == seen


def test_status_page_marks_targets_that_send_with_a_password_over_submission(tmp_path):
    write_client_cert(tmp_path, 10)
    store = ResultStore()
    store.set_targets(target_spec(t) for t in m365_config(tmp_path).targets)
    page = overview_page(store.states(), next_run=lambda name: None, now=NOW, version="9.9")
    rows = {
        name: row
        for row in page.text.split("<article ")[1:]
        for name in [row.split('data-name="', 1)[1].split('"', 1)[0]]
    }
    assert 'class="readiness"' in rows["basic"] and 'class="readiness"' not in rows["connector"]
    title = rows["basic"].split('class="readiness" title="', 1)[1].split('"', 1)[0]
    assert "end of December 2026" in title
    assert "XOAUTH2" in title and "High Volume Email" in title and "mode hve or acs" in title
