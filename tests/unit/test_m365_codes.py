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


def test_every_entry_says_what_it_means_and_why() -> None:
    for entry in SMTP_CODES:
        assert len(entry.meaning) > 10 and len(entry.cause) > 10, entry
        assert entry.docs is None or entry.docs.startswith("https://"), entry
    for code, error in AADSTS.items():
        assert len(error.meaning) > 5 and len(error.cause) > 20, code


def test_a_code_with_variants_has_a_meaning_of_its_own() -> None:
    counts: dict[str, int] = {}
    for entry in SMTP_CODES:
        counts[entry.enhanced] = counts.get(entry.enhanced, 0) + 1
    assert {code for code, n in counts.items() if n > 1} == set(codes.CODE_MEANINGS)


def test_entries_for_finds_every_variant_and_ranges() -> None:
    assert [e.match for e in codes.entries_for("5.7.139")] == [
        "basic authentication is disabled",
        "for the tenant",
        "for the mailbox",
        "organization configuration",
        None,
    ]
    assert [e.enhanced for e in codes.entries_for("4.7.650")] == ["4.7.500-699"]
    assert codes.entries_for("5.7.999") == ()


CONNECTOR_DOCS = (
    "https://learn.microsoft.com/en-us/defender-office-365/connectors-mail-flow-intelligence"
)


@pytest.mark.parametrize(
    ("reply", "reason", "meaning", "action"),
    [
        # Microsoft 365 delivering through a connector (docs/m365.md#status-codes): Microsoft
        # retries these for 24 hours, so they are temporary, never configuration-class.
        ("450 4.4.312 DNS query failed", Reason.SMTP_TEMPORARY_FAILURE, "DNS query failed", "DNS"),
        ("450 4.4.315 Connection timed out", Reason.SMTP_TEMPORARY_FAILURE, "timed out",
         "SmartHosts"),
        ("450 4.4.316 Connection refused", Reason.SMTP_TEMPORARY_FAILURE, "connection refused",
         "TCP 25"),
        ("450 4.4.317 Cannot connect to remote server", Reason.SMTP_TEMPORARY_FAILURE,
         "cannot connect to remote server", "TLS"),
        ("450 4.4.318 Connection was closed abruptly", Reason.SMTP_TEMPORARY_FAILURE,
         "closed abruptly", "firewall"),
        ("450 4.7.320 Certificate validation failed", Reason.SMTP_TEMPORARY_FAILURE,
         "certificate validation failed", "certificate"),
        ("550 5.7.515 Access denied, sending domain contoso.com doesn't meet the required "
         "authentication level.", Reason.SMTP_REJECTED, "required authentication level", "DMARC"),
        ("535 5.7.139 Authentication unsuccessful, the organization configuration doesn't allow "
         "this authentication request.", Reason.AUTH_BASIC_DISABLED, "organization's "
         "configuration", "-AllowBasicAuthSmtp"),
        ("550 5.1.7 The specified sender domain has not been linked.", Reason.SMTP_REJECTED,
         "sender domain has not been linked", "Connect domain"),
    ],
)  # fmt: skip
def test_added_codes_classify_with_their_meaning_and_action(
    reply: str, reason: Reason, meaning: str, action: str
) -> None:
    entry = lookup(*_split(reply))
    assert entry is not None and entry.reason is reason
    assert meaning in entry.meaning and action in entry.remedy
    got = classify_submit_reply(*_split(reply))
    assert got.reason is reason and got.remedy == entry.remedy
    if entry.enhanced.startswith(("4.4.31", "4.7.320")):
        assert entry.docs == CONNECTOR_DOCS and entry.reason not in CONFIGURATION_REASONS


def test_acs_variant_of_5_1_7_needs_its_text() -> None:
    # RFC 3463's 5.1.7 (bad sender address syntax) from any other server is not ACS's.
    assert lookup(553, "5.1.7 Bad sender address syntax") is None


def test_the_5_7_3_cause_names_the_hve_and_acs_forms() -> None:
    (entry,) = codes.entries_for("5.7.3")
    assert "High Volume Email" in entry.cause
    assert "<Communication Services resource name>.<Entra application ID>.<Entra tenant ID>" in (
        entry.cause
    )


def test_aadsts700023_is_not_called_an_expired_certificate() -> None:
    # Microsoft lists 700023 as an invalid scope / a client assertion audience mismatch.
    assert "expired" not in AADSTS["AADSTS700023"].meaning
    assert "audience" in AADSTS["AADSTS700023"].remedy
