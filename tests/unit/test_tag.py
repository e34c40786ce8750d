"""Tags: unguessable, HMAC-verified (run id included), rejected when forged; old tags still verify."""

import email
import hashlib
import hmac
import re

import pytest

from probe.message import build_message
from probe.tag import PROCESS_RUN_ID, TAG_HEADER, make_tag, new_run_id, verify_tag

SECRET = b"s" * 32
_OLD_PAYLOAD = (
    "v=rp1; i=site-a; t=m365-submission; s=1800000000; n=0123456789abcdef0123456789abcdef"
)


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


def test_run_id_is_an_authenticated_field():
    # docs/architecture.md, "Cleanup and nothing is lost": short-lived runs tag their own mail.
    tag = make_tag(
        SECRET, instance="site-a", target="m365", run="0123abcd4567ef89", now=1_800_000_000
    )
    assert "; i=site-a; r=0123abcd4567ef89; t=m365;" in str(tag)
    raw = build_message(tag=tag, mail_from="probe@probe.test", rcpt_to="inbox@probe.test")
    assert verify_tag(SECRET, email.message_from_bytes(raw)[TAG_HEADER]) == tag
    assert verify_tag(SECRET, str(tag)).run == "0123abcd4567ef89"
    # Changing, removing or adding a run id breaks the HMAC: a run cannot pass as another.
    assert verify_tag(SECRET, str(tag).replace("r=0123abcd4567ef89", "r=0123abcd4567ef88")) is None
    assert verify_tag(SECRET, str(tag).replace(" r=0123abcd4567ef89;", "")) is None
    daemon = make_tag(SECRET, instance="site-a", target="m365")
    assert verify_tag(SECRET, str(daemon).replace("; t=", "; r=0123abcd4567ef89; t=")) is None
    assert verify_tag(b"x" * 32, str(tag)) is None


def test_tags_without_a_run_id_are_the_original_format_and_still_verify():
    # Made by the pre-run-id code (rp1: v, i, t, s, n, m): mail already in mailboxes, and the
    # daemon's own tags, which are byte for byte what older versions make and accept.
    old = (
        "v=rp1; i=site-a; t=m365-submission; s=1800000000; n=0123456789abcdef0123456789abcdef; "
        "m=" + hmac.new(SECRET, _OLD_PAYLOAD.encode(), hashlib.sha256).hexdigest()
    )
    tag = verify_tag(SECRET, old)
    assert tag is not None and tag.run is None and str(tag) == old
    assert tag.nonce == "0123456789abcdef0123456789abcdef" and tag.sent_at == 1_800_000_000
    fresh = make_tag(SECRET, instance="site-a", target="m365-submission", now=1_800_000_000)
    assert fresh.run is None and "r=" not in str(fresh)


def test_run_ids_are_fresh_and_checked():
    assert re.fullmatch("[0-9a-f]{16}", PROCESS_RUN_ID)  # 64 random bits
    assert len({new_run_id() for _ in range(100)}) == 100
    for bad in ("", "a b", "a;b", "-x", "x" * 33):
        with pytest.raises(ValueError):
            make_tag(SECRET, instance="i", target="t", run=bad)
