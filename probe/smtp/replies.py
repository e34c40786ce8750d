"""Classify SMTP replies into the fixed reasons, with a one-line remedy where one is known."""

from __future__ import annotations

from dataclasses import dataclass

from probe.m365.codes import enhanced_code, lookup
from probe.result import Reason

__all__ = ["ReplyClass", "classify_auth_reply", "classify_submit_reply", "enhanced_code"]


@dataclass(frozen=True)
class ReplyClass:
    """What an SMTP reply means for the probe."""

    reason: Reason
    remedy: str | None = None


def classify_auth_reply(code: int, text: str) -> ReplyClass:
    """A refused AUTH: Microsoft's known codes first, then by reply class (not by wording).

    Other servers word the same failure differently (Postfix/Dovecot ``535 5.7.8``, Microsoft
    ``535 5.7.3``), so anything unknown is judged by its code class.
    """
    known = lookup(code, text)
    if known is not None:
        return ReplyClass(known.reason, known.remedy)
    if "basic authentication" in text.lower():
        return ReplyClass(
            Reason.AUTH_BASIC_DISABLED,
            "basic authentication is off for this mailbox or tenant: switch the target to "
            "auth.method oauth2 (XOAUTH2)",
        )
    if 400 <= code < 500:
        return ReplyClass(
            Reason.SMTP_TEMPORARY_FAILURE,
            "the server could not check the credentials right now; it retries on the next run",
        )
    if code in (500, 501, 502, 504):
        return ReplyClass(
            Reason.AUTH_UNAVAILABLE,
            "the server does not accept this AUTH mechanism or its data; check auth.method",
        )
    return ReplyClass(
        Reason.AUTH_FAILED,
        "the credentials were refused: check auth.username and the password or token; for "
        "oauth2 the app must be allowed to use this mailbox (on Microsoft 365: New-ServicePrincipal "
        "and Add-MailboxPermission)",
    )


def classify_submit_reply(code: int, text: str) -> ReplyClass:
    """A refused MAIL FROM, RCPT TO or DATA: Microsoft's known codes first, then the class."""
    lowered = text.lower()
    # Postfix reject_sender_login_mismatch: "553 5.7.1 ... Sender address rejected: not owned
    # by user" - the same refusal as Microsoft's SendAsDenied, under a generic 5.7.1.
    if "not owned by user" in lowered:
        return ReplyClass(
            Reason.SEND_AS_DENIED,
            "mail_from must be the authenticated mailbox or one it may send as "
            "(Postfix: smtpd_sender_login_maps)",
        )
    known = lookup(code, text)
    if known is not None:
        return ReplyClass(known.reason, known.remedy)
    if "sendasdenied" in lowered:
        return ReplyClass(
            Reason.SEND_AS_DENIED,
            "mail_from must be the authenticated mailbox or one it has Send As rights on",
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
