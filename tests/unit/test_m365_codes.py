"""Every mapped Microsoft 365 reply code and Entra error: code -> reason, with a remedy."""

from __future__ import annotations

import pytest

from probe.m365 import codes
from probe.m365.codes import AADSTS, SMTP_CODES, aadsts_remedy, lookup
from probe.result import CONFIGURATION_REASONS, Reason
from probe.smtp.replies import classify_auth_reply, classify_submit_reply


def _split(example: str) -> tuple[int, str]:
    code, _, text = example.partition(" ")
    return int(code), text


@pytest.mark.parametrize("entry", SMTP_CODES, ids=lambda c: f"{c.enhanced}:{c.match or '*'}")
def test_every_mapped_code_classifies_to_its_reason_with_a_remedy(entry: codes.Code) -> None:
    code, text = _split(entry.example)
    assert lookup(code, text) == entry  # the example reaches this very entry, not an earlier one
    for classify in (classify_auth_reply, classify_submit_reply):
        got = classify(code, text)
        assert got.reason is entry.reason
        assert got.remedy == entry.remedy and len(got.remedy) > 20


@pytest.mark.parametrize("code", sorted(AADSTS))
def test_every_aadsts_code_has_a_remedy(code: str) -> None:
    text = f"invalid_client: {code}: something went wrong. Trace ID: x"
    assert aadsts_remedy(text) == (code, AADSTS[code][1])
    assert len(AADSTS[code][1]) > 20


@pytest.mark.parametrize(
    ("example", "reason", "words"),
    [
        ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
         "Tenant. Visit https://aka.ms/smtp_auth_disabled", Reason.AUTH_FAILED,
         "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"),
        ("535 5.7.3 Authentication unsuccessful [SN2PR00CA0018]", Reason.AUTH_FAILED,
         "New-ServicePrincipal -AppId"),
        ("535 5.7.3 Authentication unsuccessful [SN2PR00CA0018]", Reason.AUTH_FAILED,
         "Enterprise Application object id"),
        ("535 5.7.3 Authentication unsuccessful [SN2PR00CA0018]", Reason.AUTH_FAILED,
         "-AccessRights FullAccess"),
        ("554 5.2.252 SendAsDenied; a not allowed to send as b", Reason.SEND_AS_DENIED,
         "-AccessRights SendAs"),
        ("550 5.7.68 TenantInboundAttribution; Direct Send not allowed", Reason.AUTH_FAILED,
         "RejectDirectSend"),
        ("550 5.7.64 TenantAttribution; Relay Access Denied", Reason.AUTH_FAILED,
         "Set-InboundConnector"),
    ],
)  # fmt: skip
def test_remedies_name_the_admin_action(example: str, reason: Reason, words: str) -> None:
    got = classify_submit_reply(*_split(example))
    assert got.reason is reason and words in (got.remedy or "")


def test_classification_is_by_code_not_wording() -> None:
    # Postfix/Dovecot refuse a bad token with 535 5.7.8, Microsoft with 535 5.7.3: both auth_failed.
    assert (
        classify_auth_reply(535, "5.7.8 Error: authentication failed:").reason is Reason.AUTH_FAILED
    )
    assert (
        classify_auth_reply(535, "5.7.3 Authentication unsuccessful").reason is Reason.AUTH_FAILED
    )
    # Same code, different variant text: the text picks the variant.
    assert (
        classify_auth_reply(
            535, "5.7.139 Authentication unsuccessful, basic authentication is disabled."
        ).reason
        is Reason.AUTH_BASIC_DISABLED
    )
    # A reply class that contradicts the enhanced code is not taken for Microsoft's.
    assert lookup(454, "5.7.3 odd") is None
    assert classify_auth_reply(454, "4.7.0 Temporary authentication failure").reason is (
        Reason.SMTP_TEMPORARY_FAILURE
    )
    # A generic 4.3.2 (not Microsoft's throttling text) is a plain deferral.
    assert classify_submit_reply(
        451, "4.3.2 Temporary server error. Please try again later"
    ).reason is (Reason.SMTP_TEMPORARY_FAILURE)
    # Ranges: 5.7.700-749 and 4.7.500-699.
    assert lookup(550, "5.7.705 Access denied, tenant has exceeded threshold").reason is (
        Reason.SMTP_REJECTED
    )
    assert lookup(451, "4.7.650 try later").reason is Reason.THROTTLED
    assert lookup(550, "5.7.750 x").enhanced == "5.7.750"  # not swallowed by 5.7.700-749


def test_postfix_sender_login_mismatch_is_send_as_denied() -> None:
    got = classify_submit_reply(
        553, "5.7.1 <x@probe.test>: Sender address rejected: not owned by user y@probe.test"
    )
    assert got.reason is Reason.SEND_AS_DENIED


def test_configuration_class_codes_trigger_backoff() -> None:
    for entry in SMTP_CODES:
        if entry.enhanced in ("5.7.3", "5.7.139", "5.7.30", "5.2.252", "5.7.64", "5.7.68", "4.3.2"):
            assert entry.reason in CONFIGURATION_REASONS, entry
