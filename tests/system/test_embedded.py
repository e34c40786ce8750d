"""The embedded mail system over real loopback sockets: aiosmtplib in, IMAPClient (in threads) out."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosmtplib
import authres
import authres.dmarc
import pytest
from imapclient import IMAPClient

from relayprobe.embedded import EmbeddedMailSystem

AR_PARSER = authres.FeatureContext(authres.dmarc)


@pytest.fixture
async def ems(tmp_path: Path) -> AsyncIterator[EmbeddedMailSystem]:
    async with EmbeddedMailSystem(tmp_path / "ems") as system:
        yield system


def client_tls(ems: EmbeddedMailSystem) -> ssl.SSLContext:
    # Full verification (chain + host name) against the throw-away CA only.
    return ssl.create_default_context(cafile=str(ems.ca_file))


def message(subject: str, *, sender: str = "probe@demo.test", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: inbox@demo.test\r\nSubject: {subject}\r\n{extra}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "This is a delivery probe with a real text body.\r\n"
    ).encode()


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


async def submit(ems: EmbeddedMailSystem, data: bytes, rcpt: str = "inbox@demo.test") -> str:
    _, reply = await aiosmtplib.send(
        data,
        sender=ems.sender,
        recipients=[rcpt],
        hostname=ems.host,
        port=ems.submission_port,
        start_tls=True,
        tls_context=client_tls(ems),
        username=ems.sender,
        password=ems.sender_password,
        timeout=10,
    )
    return reply


async def direct_send(ems: EmbeddedMailSystem, data: bytes, sender: str, rcpt: str) -> str:
    _, reply = await aiosmtplib.send(
        data,
        sender=sender,
        recipients=[rcpt],
        hostname=ems.host,
        port=ems.mx_port,
        start_tls=True,
        tls_context=client_tls(ems),
        timeout=10,
    )
    return reply


@contextmanager
def imap(ems: EmbeddedMailSystem) -> Iterator[IMAPClient]:
    """A logged-in IMAPClient over verified implicit TLS (blocking: call from worker threads)."""
    assert ems.imap_security == "tls"
    client = IMAPClient(ems.host, port=ems.imap_port, ssl=True, ssl_context=client_tls(ems))
    client.timeout = 10
    try:
        client.login(ems.recipient, ems.recipient_password)
        yield client
    finally:
        try:
            client.logout()
        except Exception:
            client.shutdown()


def find_headers(ems: EmbeddedMailSystem, folder: str, subject: str) -> list[email.message.Message]:
    with imap(ems) as client:
        client.select_folder(folder)
        uids = client.search(["HEADER", "Subject", subject])
        fetched = client.fetch(uids, ["BODY.PEEK[HEADER]"])
    return [
        email.message_from_bytes(fetched[uid][b"BODY[HEADER]"], policy=email.policy.compat32)
        for uid in uids
    ]


async def wait_for(ems: EmbeddedMailSystem, folder: str, subject: str, timeout: float = 5):
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(find_headers, ems, folder, subject)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def auth_results(msg: email.message.Message) -> tuple[str, dict[str, Any]]:
    """The single A-R header: its raw value and {method: result object}."""
    values = msg.get_all("Authentication-Results") or []
    assert len(values) == 1, values
    value = " ".join(values[0].split())
    parsed = AR_PARSER.parse_value(value)
    assert parsed.authserv_id == "mx.demo.test"
    return value, {r.method: r for r in parsed.results}


def props(result: Any) -> dict[str, str]:
    return {f"{p.type}.{p.name}": p.value for p in result.properties}


async def test_submission_relay_lands_in_inbox_with_spf_dkim_dmarc_pass(ems):
    subject = unique("relay")
    reply = await submit(ems, message(subject))
    assert reply.startswith("2.0.0 OK")

    [msg] = await wait_for(ems, "INBOX", subject)
    value, results = auth_results(msg)
    assert results["spf"].result == "pass"
    assert props(results["spf"]) == {"smtp.mailfrom": "demo.test"}
    assert results["dkim"].result == "pass"
    assert props(results["dkim"]) == {"header.d": "demo.test", "header.s": "demo"}
    assert results["dmarc"].result == "pass"
    assert props(results["dmarc"]) == {"header.from": "demo.test"}
    assert "dmarc=pass (p=quarantine) header.from=demo.test" in value
    # The receiving hop's Received names the sender's public IP; submission added the rest.
    assert "[192.0.2.25]" in msg.get_all("Received")[0]
    assert msg["Message-ID"] and msg["Date"] and msg["DKIM-Signature"]
    assert await asyncio.to_thread(find_headers, ems, "Junk Email", subject) == []
    assert ems.deliveries == 1


async def test_selected_session_sees_new_mail_after_noop_and_searches_custom_headers(ems):
    """pymap, like Dovecot, announces new mail at the end of a command: NOOP, then UID SEARCH."""
    tag = uuid.uuid4().hex
    client = await asyncio.to_thread(
        IMAPClient, ems.host, port=ems.imap_port, ssl=True, ssl_context=client_tls(ems)
    )
    try:
        await asyncio.to_thread(client.login, ems.recipient, ems.recipient_password)
        await asyncio.to_thread(client.select_folder, "INBOX")
        await submit(ems, message(unique("noop"), extra=f"X-Relayprobe-Tag: v1.{tag}\r\n"))
        _, untagged = await asyncio.to_thread(client.noop)
        assert (1, b"EXISTS") in untagged
        uids = await asyncio.to_thread(client.search, ["HEADER", "X-Relayprobe-Tag", f"v1.{tag}"])
        assert len(uids) == 1
        fields = "BODY.PEEK[HEADER.FIELDS (X-Relayprobe-Tag Authentication-Results)]"
        fetched = await asyncio.to_thread(client.fetch, uids, [fields])
        [data] = fetched.values()
        headers = next(v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS"))
        assert f"X-Relayprobe-Tag: v1.{tag}".encode() in headers
        assert b"Authentication-Results: mx.demo.test; spf=pass" in headers
    finally:
        await asyncio.to_thread(client.logout)


async def test_imap_starttls_port_refuses_login_until_tls(ems):
    def session() -> tuple[tuple[bytes, ...], str, tuple[bytes, ...], list[int]]:
        client = IMAPClient(ems.host, port=ems.imap_starttls_port, ssl=False, timeout=10)
        try:
            before = client.capabilities()
            with pytest.raises(IMAPClient.Error) as refused:
                client.login(ems.recipient, ems.recipient_password)
            client.starttls(client_tls(ems))
            after = client.capabilities()
            client.login(ems.recipient, ems.recipient_password)
            client.select_folder("INBOX")
            return before, str(refused.value), after, client.search(["ALL"])
        finally:
            client.logout()

    before, refused, after, uids = await asyncio.to_thread(session)
    assert b"STARTTLS" in before and b"LOGINDISABLED" in before
    assert "LOGIN" in refused
    assert b"LOGINDISABLED" not in after and b"AUTH=PLAIN" in after
    assert uids == []


async def test_spoofed_direct_send_is_junked_with_spf_and_dmarc_fail(ems):
    subject = unique("spoof")
    await direct_send(ems, message(subject), "probe@demo.test", "inbox@demo.test")

    [msg] = await wait_for(ems, "Junk Email", subject)
    value, results = auth_results(msg)
    assert results["spf"].result == "fail"
    assert results["dkim"].result == "none"
    assert results["dmarc"].result == "fail"
    assert "dmarc=fail (p=quarantine)" in value
    assert "[198.51.100.7]" in msg.get_all("Received")[0]
    assert await asyncio.to_thread(find_headers, ems, "INBOX", subject) == []


async def test_replayed_signed_mail_with_edited_body_fails_dkim(ems):
    subject = unique("tamper")
    await submit(ems, message(subject))
    [original] = await wait_for(ems, "INBOX", subject)

    def full_message() -> bytes:
        with imap(ems) as client:
            client.select_folder("INBOX")
            [uid] = client.search(["HEADER", "Subject", subject])
            return client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]

    raw = await asyncio.to_thread(full_message)
    # Drop the receiving hop's A-R and Received, keep the DKIM-signed rest, edit the body.
    signed = raw.split(b"\r\n", 2)[2].replace(b"real text body", b"forged text body")
    await direct_send(ems, signed, "probe@demo.test", "inbox+junk@demo.test")
    found = await wait_for(ems, "Junk Email", subject)
    assert len(found) == 1
    _, results = auth_results(found[0])
    assert results["dkim"].result == "fail"
    assert results["dkim"].reason == "signature verification failed"
    assert results["spf"].result == "fail"
    assert results["dmarc"].result == "fail"
    assert original["DKIM-Signature"] == found[0]["DKIM-Signature"]


async def test_forged_authentication_results_from_outside_are_removed(ems):
    subject = unique("forged-ar")
    forged = "Authentication-Results: mx.demo.test; spf=pass smtp.mailfrom=demo.test\r\n"
    await direct_send(ems, message(subject, extra=forged), "probe@demo.test", "inbox@demo.test")
    [msg] = await wait_for(ems, "Junk Email", subject)
    _, results = auth_results(msg)  # exactly one header: ours
    assert results["spf"].result == "fail"


async def test_junk_switches_header_and_plus_junk(ems):
    header_subject, plus_subject = unique("hdr-junk"), unique("plus-junk")
    await submit(ems, message(header_subject, extra="X-Testbed-Junk: yes\r\n"))
    await submit(ems, message(plus_subject), rcpt="inbox+junk@demo.test")
    for subject in (header_subject, plus_subject):
        [msg] = await wait_for(ems, "Junk Email", subject)
        assert auth_results(msg)[1]["dmarc"].result == "pass"  # junked by switch, not by policy


async def test_auth_before_starttls_is_refused(ems):
    smtp = aiosmtplib.SMTP(hostname=ems.host, port=ems.submission_port, start_tls=False)
    async with smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        assert not smtp.supports_extension("auth")  # not advertised before TLS
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", b"AHByb2JlQGRlbW8udGVzdAB4")
        assert reply.code == 530
        reply = await smtp.execute_command(b"MAIL", b"FROM:<probe@demo.test>")
        assert reply.code == 530


async def test_wrong_password_is_refused_with_535(ems):
    smtp = aiosmtplib.SMTP(
        hostname=ems.host, port=ems.submission_port, start_tls=True, tls_context=client_tls(ems)
    )
    async with smtp:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
            await smtp.login(ems.sender, "not-the-password")
    assert err.value.code == 535
    assert "5.7.3" in err.value.message


async def test_auth_refused_switch_answers_535_then_recovers(ems):
    ems.set_auth_refused(True)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as err:
        await submit(ems, message(unique("refused")))
    assert err.value.code == 535
    assert "5.7.3" in err.value.message
    ems.set_auth_refused(False)
    assert (await submit(ems, message(unique("recovered")))).startswith("2.0.0")


async def test_mail_from_other_than_login_is_refused_with_553(ems):
    smtp = aiosmtplib.SMTP(
        hostname=ems.host, port=ems.submission_port, start_tls=True, tls_context=client_tls(ems)
    )
    async with smtp:
        await smtp.login(ems.sender, ems.sender_password)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await smtp.sendmail("ceo@demo.test", ["inbox@demo.test"], message("x"))
    assert err.value.code == 553


async def test_mx_offers_no_auth_and_relays_nothing(ems):
    smtp = aiosmtplib.SMTP(
        hostname=ems.host, port=ems.mx_port, start_tls=True, tls_context=client_tls(ems)
    )
    async with smtp:
        assert not smtp.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as err:
            await smtp.sendmail("x@partner.test", ["someone@example.com"], message("x"))
    [refused] = err.value.recipients
    assert refused.code == 550
    assert "5.7.54" in refused.message


@pytest.mark.parametrize("listener", ["submission", "mx"])
@pytest.mark.parametrize(
    ("extension", "code", "enhanced"),
    [("defer", 451, "4.3.2"), ("throttle", 451, "4.7.500"), ("reject", 550, "5.1.1")],
)
async def test_fault_extensions_answer_at_rcpt(ems, listener, extension, code, enhanced):
    rcpt = f"inbox+{extension}@demo.test"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as err:
        if listener == "submission":
            await submit(ems, message("fault"), rcpt=rcpt)
        else:
            await direct_send(ems, message("fault"), "x@partner.test", rcpt)
    [refused] = err.value.recipients
    assert (refused.code, refused.recipient) == (code, rcpt)
    assert refused.message.startswith(enhanced)
    assert ems.deliveries == 0


async def test_plus_delay_is_accepted_and_delivered_seconds_later(ems):
    subject = unique("delay")
    sent_at = time.monotonic()  # before the server's timer can start, so elapsed >= 2 is exact
    await submit(ems, message(subject), rcpt="inbox+delay2@demo.test")
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(find_headers, ems, "INBOX", subject) == []
    found = await wait_for(ems, "INBOX", subject, timeout=5)
    elapsed = time.monotonic() - sent_at
    assert len(found) == 1
    assert 2.0 <= elapsed < 4.0
    assert auth_results(found[0])[1]["dmarc"].result == "pass"


async def test_idle_wakes_up_on_new_delivery(ems):
    idling = threading.Event()

    def idle_until_exists() -> tuple[list[Any], float]:
        with imap(ems) as client:
            assert b"IDLE" in client.capabilities()
            client.select_folder("INBOX")
            client.idle()
            idling.set()
            responses = client.idle_check(timeout=10)
            woke = time.monotonic()
            client.idle_done()
            return responses, woke

    watcher = asyncio.ensure_future(asyncio.to_thread(idle_until_exists))
    assert await asyncio.to_thread(idling.wait, 5)
    await asyncio.sleep(0.2)  # let the server reach its wait before the mail lands
    await submit(ems, message(unique("idle")))
    sent = time.monotonic()
    responses, woke = await watcher
    assert (1, b"EXISTS") in responses
    assert woke - sent < 2.0


async def test_deleting_one_message_by_uid_leaves_the_others(ems):
    subjects = [unique(f"keep-{i}") for i in range(3)]
    for subject in subjects:
        await submit(ems, message(subject))

    def delete_middle() -> tuple[list[int], list[int]]:
        with imap(ems) as client:
            client.select_folder("INBOX")
            uids = [client.search(["SUBJECT", s])[0] for s in subjects]
            client.add_flags([uids[1]], [b"\\Deleted"])
            if client.has_capability("UIDPLUS"):
                client.uid_expunge([uids[1]])
            else:
                client.expunge()
            return uids, sorted(client.search(["ALL"]))

    uids, remaining = await asyncio.to_thread(delete_middle)
    assert remaining == [uids[0], uids[2]]
    assert await ems.store.folder_uids(ems.recipient, "INBOX") == [uids[0], uids[2]]


async def test_stop_ends_an_idle_session_promptly(tmp_path: Path):
    system = EmbeddedMailSystem(tmp_path / "ems")
    await system.start()
    idling = threading.Event()

    def idle_forever() -> list[Any]:
        with imap(system) as client:
            client.select_folder("INBOX")
            client.idle()
            idling.set()
            return client.idle_check(timeout=10)

    watcher = asyncio.ensure_future(asyncio.to_thread(idle_forever))
    assert await asyncio.to_thread(idling.wait, 5)
    started = time.monotonic()
    await system.stop()
    assert time.monotonic() - started < 2.0
    responses = await asyncio.wait_for(watcher, 5)
    assert any(b"BYE" in r for r in responses), responses


def test_secrets_stay_out_of_repr(tmp_path: Path):
    system = EmbeddedMailSystem(tmp_path)
    text = repr(system)
    assert system.sender_password not in text and system.recipient_password not in text
