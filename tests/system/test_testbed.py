"""Proves the local mail testbed (tests/testbed) behaves like the M365 relay + mailbox it stands in for."""

from __future__ import annotations

import email
import json
import re
import smtplib
import ssl
import time
import uuid
from base64 import b64encode
from email.message import Message
from email.utils import formatdate

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from imapclient.imapclient import JUNK

from tests.testbed.api import Testbed, TestbedError

pytest_plugins = ["tests.testbed.fixture"]
pytestmark = pytest.mark.testbed

SENDER, INBOX, PROBE = "sender@probe.test", "inbox@probe.test", "probe@probe.test"


def tls(tb: Testbed) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tb.ca_file))


def make_message(sender: str, to: str, **headers: str) -> tuple[str, bytes]:
    """A small RFC 5322 message with a unique X-Test-Id; returns (id, bytes)."""
    test_id = uuid.uuid4().hex
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: testbed {test_id[:8]}",
        f"Message-ID: <{test_id}@test.invalid>",
        "Date: " + formatdate(),
        f"X-Test-Id: {test_id}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
        "",
        "A real text body, so the message looks like mail.",
        "",
    ]
    return test_id, "\r\n".join(lines).encode()


def submit(tb: Testbed, sender: str, to: str, data: bytes, login: str = SENDER) -> None:
    """STARTTLS (CA verified) + AUTH on submission, then send."""
    with smtplib.SMTP(tb.host, tb.submission_port, timeout=10) as smtp:
        smtp.starttls(context=tls(tb))
        smtp.login(login, tb.users[login])
        smtp.sendmail(sender, [to], data)


def direct_send(tb: Testbed, sender: str, to: str, data: bytes) -> None:
    with smtplib.SMTP(tb.host, tb.mx_port, timeout=10) as smtp:
        smtp.sendmail(sender, [to], data)


def mailbox(tb: Testbed, user: str = INBOX) -> IMAPClient:
    client = IMAPClient(tb.host, port=tb.imap_tls_port, ssl=True, ssl_context=tls(tb), timeout=10)
    client.login(user, tb.users[user])
    return client


def wait_for(
    tb: Testbed, test_id: str, folder: str = "INBOX", user: str = INBOX, timeout: float = 10.0
) -> Message:
    """Poll (NOOP + SEARCH) until the message with this X-Test-Id is in `folder`."""
    with mailbox(tb, user) as imap:
        imap.select_folder(folder, readonly=True)
        deadline = time.monotonic() + timeout
        while True:
            imap.noop()
            uids = imap.search(["HEADER", "X-Test-Id", test_id])
            if uids:
                raw = imap.fetch(uids[:1], ["RFC822"])[uids[0]][b"RFC822"]
                return email.message_from_bytes(raw)
            if time.monotonic() > deadline:
                raise AssertionError(f"message {test_id} not in {user}/{folder} after {timeout} s")
            time.sleep(0.1)


def auth_results(msg: Message) -> dict[str, str]:
    """method -> result from the Authentication-Results headers our MX (mx.probe.test) stamped."""
    results: dict[str, str] = {}
    for header in msg.get_all("Authentication-Results", []):
        value = " ".join(str(header).split())
        authserv_id, _, rest = value.partition(";")
        if authserv_id.strip() != "mx.probe.test":
            continue
        for method in ("spf", "dkim", "dmarc"):
            match = re.search(rf"(?:^|;)\s*{method}=([a-z]+)", rest)
            if match:
                results[method] = match.group(1)
        policy = re.search(r"dmarc=[a-z]+ \(p=([a-z]+)", rest)
        if policy:
            results["dmarc.policy"] = policy.group(1)
    return results


def test_submission_is_signed_relayed_and_passes_spf_dkim_dmarc(testbed: Testbed) -> None:
    test_id, data = make_message(SENDER, INBOX)
    submit(testbed, SENDER, INBOX, data)
    msg = wait_for(testbed, test_id)
    assert auth_results(msg) == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "dmarc.policy": "quarantine",
    }
    signature = dict(re.findall(r"\b([a-z]+)=([^;\s]+)", " ".join(msg["DKIM-Signature"].split())))
    assert (signature["d"], signature["s"]) == ("probe.test", "tb")
    hops = [re.search(r"\bby (\S+)", " ".join(h.split())).group(1) for h in msg.get_all("Received")]
    assert hops == ["mx.probe.test", "mx.probe.test", "smtp.probe.test"]  # LMTP, MX, submission


@pytest.mark.parametrize("from_domain", ["probe.test", "spoof.test"])
def test_forged_direct_send_fails_dmarc_and_lands_in_junk(
    testbed: Testbed, from_domain: str
) -> None:
    forged = f"ceo@{from_domain}"
    test_id, data = make_message(forged, INBOX)
    direct_send(testbed, forged, INBOX, data)
    with mailbox(testbed) as imap:
        assert imap.find_special_folder(JUNK) == "Junk Email"
    msg = wait_for(testbed, test_id, folder="Junk Email")
    results = auth_results(msg)
    assert (results["spf"], results["dkim"], results["dmarc"]) == ("fail", "none", "fail")
    assert (
        results["dmarc.policy"] == {"probe.test": "quarantine", "spoof.test": "reject"}[from_domain]
    )


def test_tampered_signature_fails_dkim(testbed: Testbed) -> None:
    test_id, data = make_message(SENDER, INBOX)
    submit(testbed, SENDER, INBOX, data)
    signed = wait_for(testbed, test_id)
    for name in ("Authentication-Results", "Received", "Return-Path", "Delivered-To", "X-Test-Id"):
        del signed[name]
    replay_id = uuid.uuid4().hex
    signed["X-Test-Id"] = replay_id  # not a signed header: only the body edit breaks the signature
    signed.set_payload("An edited body.\r\n")
    direct_send(testbed, SENDER, INBOX, signed.as_bytes())
    msg = wait_for(testbed, replay_id, folder="Junk Email")
    assert auth_results(msg)["dkim"] == "fail"
    assert auth_results(msg)["dmarc"] == "fail"


@pytest.mark.parametrize(
    ("rcpt", "headers", "folder"),
    [
        (INBOX, {}, "INBOX"),
        (INBOX, {"X_Spam_Flag": "YES"}, "Junk Email"),
        (INBOX, {"X_Testbed_Junk": "1"}, "Junk Email"),
        ("inbox+junk@probe.test", {}, "Junk Email"),
    ],
)
def test_sieve_files_marked_mail_into_junk(
    testbed: Testbed, rcpt: str, headers: dict[str, str], folder: str
) -> None:
    # partner.test may send from 127.0.0.1 (SPF pass, DMARC p=none): only the mark decides.
    test_id, data = make_message("news@partner.test", rcpt, **headers)
    direct_send(testbed, "news@partner.test", rcpt, data)
    msg = wait_for(testbed, test_id, folder=folder)
    assert auth_results(msg)["dmarc"] == "pass"


def test_folders_and_capabilities_like_outlook(testbed: Testbed) -> None:
    with mailbox(testbed, PROBE) as imap:
        assert {b"IDLE", b"SPECIAL-USE"} <= set(imap.capabilities())
        flags = {name: set(f) for f, _, name in imap.list_folders()}
    assert flags["Junk Email"] >= {b"\\Junk"}
    assert flags["Sent Items"] >= {b"\\Sent"}
    assert flags["Deleted Items"] >= {b"\\Trash"}
    assert flags["Drafts"] >= {b"\\Drafts"} and flags["Archive"] >= {b"\\Archive"}
    assert "INBOX" in flags


def refused(exc: smtplib.SMTPRecipientsRefused, rcpt: str) -> tuple[int, str]:
    code, text = exc.recipients[rcpt]
    return code, text.decode()


@pytest.mark.parametrize(
    ("verb", "code", "status"), [("defer", 451, "4.3.2"), ("reject", 550, "5.1.1")]
)
def test_fault_switch_refuses_the_next_session(
    tb_clean: Testbed, verb: str, code: int, status: str
) -> None:
    rcpt = f"inbox+{verb}switch@probe.test"
    assert tb_clean.switch(verb, rcpt) == f"{verb} {rcpt}"
    for send in (direct_send, submit):  # both the MX and the submission listener
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            send(tb_clean, SENDER, rcpt, make_message(SENDER, rcpt)[1])
        got_code, text = refused(info.value, rcpt)
        assert (got_code, text.split()[0]) == (code, status)
    tb_clean.clear()
    test_id, data = make_message(SENDER, rcpt)
    direct_send(tb_clean, SENDER, rcpt, data)  # accepted again right after clear
    wait_for(tb_clean, test_id, folder="Junk Email")  # forged probe.test from 127.0.0.1


@pytest.mark.parametrize(
    ("extension", "code", "status"),
    [
        ("throttle", 451, "4.7.500"),
        ("defer", 451, "4.3.2"),
        ("reject", 550, "5.1.1"),
        ("denied", 554, "5.7.1"),
    ],
)
def test_static_recipient_extensions(
    testbed: Testbed, extension: str, code: int, status: str
) -> None:
    rcpt = f"inbox+{extension}@probe.test"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        direct_send(testbed, "news@partner.test", rcpt, b"Subject: x\r\n\r\nx\r\n")
    got_code, text = refused(info.value, rcpt)
    assert (got_code, text.split()[0]) == (code, status)


def test_authfail_switch_refuses_auth_with_535(tb_clean: Testbed) -> None:
    assert tb_clean.switch("authfail", "on", INBOX) == f"authfail on for {INBOX}"
    with smtplib.SMTP(tb_clean.host, tb_clean.submission_port, timeout=10) as smtp:
        smtp.starttls(context=tls(tb_clean))
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.login(INBOX, tb_clean.users[INBOX])
    assert info.value.smtp_code == 535
    submit(tb_clean, SENDER, PROBE, make_message(SENDER, PROBE)[1])  # other users unaffected
    with mailbox(tb_clean, INBOX):  # IMAP logins are not affected
        pass
    tb_clean.switch("authfail", "off", INBOX)
    submit(tb_clean, INBOX, PROBE, make_message(INBOX, PROBE)[1], login=INBOX)


def test_delay_switch_delivers_only_after_n_seconds(tb_clean: Testbed) -> None:
    rcpt = "probe+slow@probe.test"  # a narrow key: concurrent sessions keep full speed
    tb_clean.switch("delay", "3", rcpt)
    test_id, data = make_message(SENDER, rcpt)
    submit(tb_clean, SENDER, rcpt, data)
    accepted = time.monotonic()
    wait_for(tb_clean, test_id, user=PROBE, timeout=10)
    assert 3.0 <= time.monotonic() - accepted < 6.0


def test_hold_switch_parks_mail_until_release(tb_clean: Testbed) -> None:
    rcpt = "probe+holdswitch@probe.test"
    tb_clean.switch("hold", rcpt)
    test_id, data = make_message("news@partner.test", rcpt)
    direct_send(tb_clean, "news@partner.test", rcpt, data)  # accepted (250) but parked
    with pytest.raises(AssertionError, match="not in"):
        wait_for(tb_clean, test_id, user=PROBE, timeout=1.0)
    tb_clean.switch("release")
    wait_for(tb_clean, test_id, user=PROBE)


def test_switch_rejects_bad_arguments(testbed: Testbed) -> None:
    with pytest.raises(TestbedError, match="unknown switch"):
        testbed.switch("explode")


def test_clear_removes_only_this_sessions_switches(tb_clean: Testbed) -> None:
    other = Testbed(tb_clean.state_dir, tb_clean.ca_file, tb_clean.users, switch_owner="other")
    other.switch("defer", "inbox+other@probe.test")
    try:
        tb_clean.switch("defer", "inbox+mine@probe.test")
        tb_clean.clear()
        faults = json.loads(tb_clean.switch("show"))["faults"]
        assert faults == {"inbox+other@probe.test": ["defer", "other"]}
    finally:
        other.clear()


def test_submission_refuses_auth_before_starttls(testbed: Testbed) -> None:
    with smtplib.SMTP(testbed.host, testbed.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        token = b64encode(f"\0{SENDER}\0{testbed.users[SENDER]}".encode()).decode()
        code, text = smtp.docmd("AUTH", f"PLAIN {token}")
        assert (code, text.split()[0]) == (530, b"5.7.0")


def test_submission_refuses_foreign_mail_from(testbed: Testbed) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        submit(testbed, PROBE, INBOX, make_message(PROBE, INBOX)[1], login=SENDER)
    code, text = refused(info.value, INBOX)
    assert (code, text.split()[0]) == (553, "5.7.1")


def test_plain_listener_offers_no_starttls(testbed: Testbed) -> None:
    with smtplib.SMTP(testbed.host, testbed.plain_port, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and not smtp.has_extn("auth")
        code, _ = smtp.docmd("STARTTLS")
        assert code == 502


def test_strict_imap_host_refuses_login_before_starttls(testbed: Testbed) -> None:
    with IMAPClient(
        testbed.imap_strict_host, port=testbed.imap_starttls_port, ssl=False, timeout=10
    ) as imap:
        assert b"LOGINDISABLED" in imap.capabilities()
        with pytest.raises(LoginError):
            imap.login(INBOX, testbed.users[INBOX])
    with IMAPClient(
        testbed.imap_strict_host, port=testbed.imap_starttls_port, ssl=False, timeout=10
    ) as imap:
        imap.starttls(ssl_context=tls(testbed))
        imap.login(INBOX, testbed.users[INBOX])


@pytest.mark.testbed_exclusive  # stopping Dovecot would break other sessions' IMAP sessions
def test_mail_queued_while_dovecot_is_down_arrives_after_restart(tb_clean: Testbed) -> None:
    tb_clean.stop_service("dovecot")
    try:
        # Direct send: submission AUTH itself needs Dovecot (SASL). Postfix queues the message.
        test_id, data = make_message("news@partner.test", INBOX)
        direct_send(tb_clean, "news@partner.test", INBOX, data)
    finally:
        tb_clean.start_service("dovecot")
    wait_for(tb_clean, test_id)
