"""The probe core end to end against the real Postfix/OpenDKIM/OpenDMARC/Dovecot mail system."""

from __future__ import annotations

import asyncio
import ssl

import imapclient
import pytest
import trustme

from probe.result import Reason, Stage, Status
from probe.roundtrip import run_probe
from tests.system.probe_configs import make_config, target_dict

pytestmark = pytest.mark.testbed


def _imap(tb, user="inbox@probe.test"):
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    client = imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=10)
    client.login(user, tb.users[user])
    return client


def _count(tb, folder, criteria, user="inbox@probe.test"):
    with _imap(tb, user) as client:
        client.select_folder(folder, readonly=True)
        return len(client.search(criteria))


async def test_pass_delivered_to_inbox_with_auth_pass(testbed):
    config = make_config(testbed)
    result = await run_probe(config, config.targets[0])
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    assert result.success
    assert result.arrival.placement == "inbox" and result.arrival.folder == "INBOX"
    auth = result.verdict.auth
    assert (auth.spf, auth.dkim, auth.dmarc) == ("pass", "pass", "pass")
    assert 0 < result.timings.delivery_seconds < 10
    assert result.timings.smtp_tls_seconds is not None and result.timings.smtp_auth_seconds
    assert result.smtp.tls_version in ("TLSv1.2", "TLSv1.3")
    assert result.smtp.reply_code == 250 and result.smtp.cert_not_after is not None
    # Cleaned up: no trace of this probe left in the mailbox.
    assert _count(testbed, "INBOX", ["SUBJECT", result.probe_id]) == 0


async def test_junked_probe_with_configured_severity(testbed):
    target = target_dict(
        testbed,
        rcpt_to="inbox+junk@probe.test",
        expect={"placement": "inbox", "junk_severity": "warning"},
    )
    config = make_config(testbed, target)
    result = await run_probe(config, config.targets[0])
    assert result.arrival.placement == "junk", result.message
    assert result.arrival.folder == "Junk Email"
    assert (result.status, result.reason) == (Status.WARNING, Reason.JUNKED)
    assert _count(testbed, "Junk Email", ["SUBJECT", result.probe_id]) == 0


async def test_dkim_and_dmarc_failure_detected_on_direct_send(testbed):
    # Direct send into the MX listener: not signed, from 127.0.0.1 which probe.test's SPF refuses.
    target = target_dict(
        testbed,
        smtp={"port": testbed.mx_port, "security": "starttls", "auth": None},
        expect={"junk_severity": "critical"},
    )
    target["smtp"].pop("auth")
    config = make_config(testbed, target)
    result = await run_probe(config, config.targets[0])
    assert result.status is Status.CRITICAL
    assert result.reason in (Reason.JUNKED, Reason.AUTH_RESULT_MISMATCH)
    auth = result.verdict.auth
    assert auth.dkim in ("none", "fail") and auth.dmarc == "fail" and auth.spf == "fail"
    assert "dmarc=fail (expected pass)" in result.message


@pytest.mark.parametrize(
    ("rcpt", "code", "reason"),
    [
        ("inbox+defer@probe.test", 451, Reason.SMTP_TEMPORARY_FAILURE),
        ("inbox+reject@probe.test", 550, Reason.SMTP_REJECTED),
    ],
)
async def test_relay_4xx_and_5xx_classified(testbed, rcpt, code, reason):
    config = make_config(testbed, target_dict(testbed, rcpt_to=rcpt))
    result = await run_probe(config, config.targets[0])
    assert (result.status, result.stage, result.reason) == (Status.CRITICAL, Stage.SUBMIT, reason)
    assert result.smtp.reply_code == code
    assert f"{testbed.host}:{testbed.submission_port}" in result.message
    assert "RCPT TO refused" in result.message


async def test_bad_password_is_auth_failed(testbed):
    target = target_dict(testbed)
    target["smtp"]["auth"] = {**target["smtp"]["auth"], "password": "not-the-password"}
    config = make_config(testbed, target)
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.AUTH, Reason.AUTH_FAILED)
    assert result.smtp.reply_code == 535
    assert "not-the-password" not in result.message and result.remedy


async def test_starttls_required_but_not_offered_sends_nothing(testbed):
    target = target_dict(testbed, smtp={"port": testbed.plain_port})
    config = make_config(testbed, target)
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.TLS, Reason.STARTTLS_UNAVAILABLE)
    assert result.timings.smtp_auth_seconds is None


async def test_wrong_ca_is_tls_failed(testbed, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    config = make_config(testbed, target_dict(testbed, smtp={"ca_file": str(other_ca)}))
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.TLS, Reason.TLS_FAILED)
    assert "certificate" in result.message


async def test_connection_refused(testbed):
    config = make_config(testbed, target_dict(testbed, smtp={"port": 1}))
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.CONNECT, Reason.CONNECT_REFUSED)
    assert f"{testbed.host}:1" in result.message


async def test_delivery_timeout_then_late_arrival_cleaned_and_counted(testbed):
    config = make_config(
        testbed,
        target_dict(
            testbed,
            rcpt_to="inbox+delay4@probe.test",
            timeout="2s",
            thresholds={"warning": "1s", "critical": "2s"},
        ),
    )
    first = await run_probe(config, config.targets[0])
    assert (first.status, first.stage, first.reason) == (
        Status.CRITICAL,
        Stage.DELIVER,
        Reason.DELIVERY_TIMEOUT,
    )
    for _ in range(40):  # wait until the delayed copy has landed
        if _count(testbed, "INBOX", ["SUBJECT", first.probe_id]):
            break
        await asyncio.sleep(0.25)
    else:
        pytest.fail("the delayed probe never arrived")
    on_time = make_config(testbed, target_dict(testbed), instance=config.instance)
    second = await run_probe(on_time, on_time.targets[0])
    assert second.status is Status.OK, second.message
    assert second.arrival.late_count == 1
    assert _count(testbed, "INBOX", ["SUBJECT", first.probe_id]) == 0


async def test_forged_lookalike_is_neither_counted_nor_deleted(testbed):
    config = make_config(
        testbed, target_dict(testbed, timeout="5s", thresholds={"warning": "4s", "critical": "5s"})
    )
    forged = (
        "From: probe@probe.test\r\nTo: inbox@probe.test\r\n"
        "Subject: [relayprobe] delivery probe 0123456789abcdef (relay)\r\n"
        f"X-Relayprobe-Tag: v=rp1; i={config.instance}; t=relay; s=1; "
        f"n={'0' * 32}; m={'0' * 64}\r\n\r\nforged\r\n"
    ).encode()
    with _imap(testbed) as client:
        client.append("INBOX", forged)
    result = await run_probe(config, config.targets[0])
    assert result.status is Status.OK and result.arrival.late_count == 0
    assert _count(testbed, "INBOX", ["SUBJECT", "0123456789abcdef"]) == 1
    with _imap(testbed) as client:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", "0123456789abcdef"])
        client.delete_messages(uids)
        client.uid_expunge(uids)


async def test_mailbox_unreachable_fails_before_anything_is_sent(testbed):
    # The IMAP login comes first: with the mailbox down, no probe mail may be left in flight.
    config = make_config(testbed, target_dict(testbed, mailbox={"port": 1}))
    result = await run_probe(config, config.targets[0])
    assert (result.status, result.stage, result.reason) == (
        Status.CRITICAL,
        Stage.DELIVER,
        Reason.IMAP_FAILED,
    )
    assert f"imap {testbed.host}:1" in result.message
    assert result.smtp is None and result.timings.smtp_connect_seconds is None


async def test_missing_junk_folder_is_named(testbed):
    config = make_config(testbed, target_dict(testbed, junk_folders=["Ongewenste e-mail"]))
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.DELIVER, Reason.FOLDER_MISSING)
    assert '"Ongewenste e-mail"' in result.message
