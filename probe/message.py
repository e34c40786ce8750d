"""Build the RFC 5322 probe message: CRLF line endings, a real text body, the tag in a header."""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage

from probe.tag import SUBJECT_MARKER, TAG_HEADER, Tag

# Microsoft's Advanced Spam Filter treats empty bodies and tracking pixels as high-confidence
# spam, so the probe carries a plain, honest paragraph of text.
_BODY = """\
This is an automated delivery probe sent by relayprobe.

It checks that mail submitted through the relay "{target}" reaches this mailbox,
how long delivery takes, and how the receiving side authenticated it (SPF, DKIM,
DMARC, spam verdict). relayprobe deletes this message once it has read its
headers. If you see it, delivery was slower than the probe waited for, or the
probe could not clean up; it is safe to delete.

Probe id: {probe_id}
Instance: {instance}
Run: {run}
"""


def message_id(tag: Tag, mail_from: str) -> str:
    """The probe's Message-ID: the probe id in it, for logs and message trace's messageId."""
    domain = mail_from.rpartition("@")[2] or "relayprobe.invalid"
    return f"<relayprobe.{tag.probe_id}.{tag.sent_at}@{domain}>"


def build_message(*, tag: Tag, mail_from: str, rcpt_to: str) -> bytes:
    """Return the probe mail as bytes with CRLF line endings, ready for SMTP DATA."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = mail_from
    msg["To"] = rcpt_to
    msg["Subject"] = f"{SUBJECT_MARKER} delivery probe {tag.probe_id} ({tag.target})"
    msg["Date"] = email.utils.formatdate(tag.sent_at, localtime=False, usegmt=True)
    msg["Message-ID"] = message_id(tag, mail_from)
    msg[TAG_HEADER] = str(tag)
    # RFC 3834: marks machine-generated mail so autoresponders stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        _BODY.format(
            target=tag.target,
            probe_id=tag.probe_id,
            instance=tag.instance,
            # Which process may delete it (docs/architecture.md, "Cleanup and nothing is lost").
            run=f"{tag.run} (relayprobe once or check_m365_relay)" if tag.run else "the daemon",
        ),
        charset="us-ascii",
        cte="7bit",
    )
    return msg.as_bytes()
