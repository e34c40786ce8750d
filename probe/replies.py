"""Classify SMTP replies into the fixed reasons, with a one-line remedy where one is known."""

from __future__ import annotations

import re
from dataclasses import dataclass

from probe.result import Reason

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class ReplyClass:
    """What an SMTP reply means for the probe."""

    reason: Reason
    remedy: str | None = None


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code in a reply text (``5.7.139``), if any."""
    match = _ENHANCED.search(text)
    return match.group(0) if match else None


def classify_auth_reply(code: int, text: str) -> ReplyClass:
    """A refused AUTH: bad credentials or token, or basic authentication switched off."""
    lowered = text.lower()
    if "basic authentication" in lowered or enhanced_code(text) == "5.7.30":
        return ReplyClass(
            Reason.AUTH_BASIC_DISABLED,
            "basic authentication is off for this mailbox or tenant: switch the target to "
            "auth.method oauth2 (XOAUTH2), or re-enable SMTP AUTH basic authentication",
        )
    if 400 <= code < 500:
        return ReplyClass(
            Reason.SMTP_TEMPORARY_FAILURE,
            "the server could not check the credentials right now; it retries on the next run",
        )
    return ReplyClass(
        Reason.AUTH_FAILED,
        "check the username and password (or token) of the target's smtp.auth, and that "
        "SMTP AUTH is enabled for the mailbox",
    )


def classify_submit_reply(code: int, text: str) -> ReplyClass:
    """A refused MAIL FROM, RCPT TO or DATA."""
    lowered = text.lower()
    enhanced = enhanced_code(text) or ""
    if "sendasdenied" in lowered or enhanced in ("5.2.252", "5.7.60"):
        return ReplyClass(
            Reason.SEND_AS_DENIED,
            "mail_from must be the authenticated mailbox or one it has Send As rights on",
        )
    if enhanced.startswith("5.2.25") or enhanced == "4.3.2" or enhanced.startswith("4.7.5"):
        return ReplyClass(
            Reason.THROTTLED,
            "the server is throttling this sender; the probe backs off, and you should look "
            "for other clients failing with the same mailbox",
        )
    if 400 <= code < 500:
        return ReplyClass(
            Reason.SMTP_TEMPORARY_FAILURE,
            "the relay deferred the message; if this repeats, check the relay's queue and logs",
        )
    return ReplyClass(
        Reason.SMTP_REJECTED,
        "the relay refused the message; the reply says why (sender, recipient or policy)",
    )
