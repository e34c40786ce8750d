"""Tags: unguessable, HMAC-verified, and rejected when forged or from another secret."""

import email

from probe.message import build_message
from probe.tag import TAG_HEADER, make_tag, verify_tag

SECRET = b"s" * 32


def test_tag_round_trips_through_a_message_header():
    tag = make_tag(SECRET, instance="site-a", target="m365-submission", now=1_800_000_000)
    raw = build_message(tag=tag, mail_from="probe@probe.test", rcpt_to="inbox@probe.test")
    header = email.message_from_bytes(raw)[TAG_HEADER]
    assert verify_tag(SECRET, header) == tag
    assert tag.sent_at == 1_800_000_000
    assert len(tag.nonce) == 32  # 128 random bits


def test_each_tag_is_fresh():
    tags = {make_tag(SECRET, instance="i", target="t").nonce for _ in range(100)}
    assert len(tags) == 100


def test_wrong_secret_edited_field_and_garbage_do_not_verify():
    tag = make_tag(SECRET, instance="i", target="t")
    assert verify_tag(b"x" * 32, str(tag)) is None
    forged = str(tag).replace("t=t;", "t=other;")
    assert forged != str(tag)
    assert verify_tag(SECRET, forged) is None
    assert verify_tag(SECRET, str(tag)[:-1] + ("0" if str(tag)[-1] != "0" else "1")) is None
    assert verify_tag(SECRET, "v=rp1; i=i; t=t; s=1; n=zz; m=00") is None
    assert verify_tag(SECRET, None) is None


def test_message_has_crlf_endings_a_real_body_and_ids():
    tag = make_tag(SECRET, instance="i", target="t")
    raw = build_message(tag=tag, mail_from="probe@probe.test", rcpt_to="inbox@probe.test")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    msg = email.message_from_bytes(raw)
    assert tag.probe_id in msg["Subject"]
    assert tag.probe_id in msg["Message-ID"]
    assert msg["Date"]
    body = msg.get_payload()
    assert "automated delivery probe" in body and len(body) > 200
