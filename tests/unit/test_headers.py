"""Header verdict assembly: receiving block, auth and spam verdicts, hops, arrival time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from probe.verdict.headers import header_block, parse_arrival_time, parse_headers, split_headers

FIXTURES = Path(__file__).parents[1] / "fixtures" / "headers"
# Anonymised copies of real header blocks (names, addresses, domains and IPs replaced; structure
# and verdict fields kept), made by corpus/anonymise.py.
CORPUS = FIXTURES / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.txt"))

SPF = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}
DKIM = {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}
DKIM |= {"timeout", "ignore", "test"}  # Microsoft's extra tokens (docs/m365.md#dkim-results)
DMARC = {"pass", "fail", "none", "temperror", "permerror", "bestguesspass"}


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_m365_inbound_full_verdict_from_a_whole_message():
    verdict = parse_headers(header_block(load("m365-inbound-junk-two-dkim.eml")))
    auth, spam = verdict.auth, verdict.spam
    assert (auth.spf, auth.dkim, auth.dmarc, auth.dmarc_action) == ("pass", "pass", "pass", "none")
    assert (auth.compauth, auth.compauth_reason) == ("pass", "100")
    assert auth.source == "Authentication-Results"
    assert auth.dkim_all == ["pass", "fail"]  # any passing signature makes dkim "pass"
    assert (spam.scl, spam.bcl, spam.sfv, spam.cat, spam.dest) == (5, 3, "SPM", "SPM", "J")
    assert verdict.arrived_at == utc(2026, 4, 1, 14, 5, 51, 229300)
    assert [h.delay_seconds for h in verdict.hops] == [None, 1.0, 0.0, 1.0, 3.0]
    assert verdict.hops[1].from_ == "mail60.example.com"
    assert verdict.hops[1].by == "CO1PEPF000066E8.mail.protection.outlook.com"
    assert verdict.hops[-1].at == utc(2026, 4, 1, 14, 5, 55)


def test_header_block_stops_at_the_body():
    raw = load("m365-inbound-junk-two-dkim.eml")
    block = header_block(raw)
    assert block.endswith(b"RF:JunkEmail;\r\n")
    assert b"must not count" not in block
    # parse_headers on the whole message also stops at the empty line
    assert parse_headers(raw).spam.scl == 5


def test_dkim_any_pass_wins_even_after_a_failing_signature():
    value = (
        "dkim=fail (signature did not verify) header.d=a.example;"
        "dkim=pass (signature was verified) header.d=b.example;dmarc=pass action=none"
    )
    auth = parse_headers(f"Authentication-Results: {value}\n").auth
    assert (auth.dkim, auth.dkim_all) == ("pass", ["fail", "pass"])


def test_dkim_first_result_when_none_passes():
    value = (
        "dkim=fail (no key for signature) header.d=a.example;dkim=timeout (key query timeout) "
        "header.d=b.example;dmarc=none action=none header.from=a.example"
    )
    auth = parse_headers(f"Authentication-Results: {value}\n").auth
    assert (auth.dkim, auth.dkim_all) == ("fail", ["fail", "timeout"])


def test_recipient_domain_tokens_no_compauth_and_forefront_quirks():
    verdict = parse_headers(load("m365-2020-recipient-domain-tokens.txt"))
    auth, spam = verdict.auth, verdict.spam
    assert (auth.spf, auth.dkim, auth.dmarc, auth.dmarc_action) == ("pass", "pass", "pass", "none")
    assert (auth.compauth, auth.compauth_reason) == (None, None)  # absent: unknown, not a failure
    # spaces after ';', values on continuation lines, `(null)` artefacts before SFV
    assert (spam.scl, spam.bcl, spam.sfv, spam.cat) == (1, 0, "NSPM", "NONE")
    # lower-case header name `...-originalarrivaltime`
    assert verdict.arrived_at == utc(2020, 7, 14, 9, 11, 58, 513900)


def test_rfc2047_encoded_authentication_results():
    auth = parse_headers(load("m365-inbound-rfc2047-ar.txt")).auth
    assert (auth.spf, auth.dkim, auth.dmarc, auth.dmarc_action) == ("fail", "none", "none", "none")
    assert (auth.compauth, auth.compauth_reason) == ("fail", "001")


def test_gmail_rfc8601_and_arc_authentication_results_ignored():
    verdict = parse_headers(load("gmail-rfc8601-arc-above.txt"))
    auth = verdict.auth
    # the ARC-Authentication-Results above (all pass) and the sender tenant's i=1 set are ignored
    assert (auth.spf, auth.dkim, auth.dmarc) == ("softfail", "fail", "fail")
    assert (auth.dmarc_action, auth.compauth, auth.source) == (None, None, "Authentication-Results")
    assert verdict.spam.to_dict() == {"scl": None, "bcl": None, "sfv": None, "cat": None}
    assert verdict.arrived_at == dt.datetime(
        2024, 9, 8, 20, 27, 46, tzinfo=dt.timezone(dt.timedelta(hours=-7))
    )


def test_postfix_three_headers_merge_into_one_verdict():
    verdict = parse_headers(load("postfix-mx-probe-test-three-ar.txt"))
    auth = verdict.auth
    assert (auth.spf, auth.dkim, auth.dmarc) == ("pass", "pass", "pass")
    assert auth.dkim_all == ["pass"]  # dkim-atps is another method, not a second signature
    assert (auth.dmarc_action, auth.compauth, auth.source) == (None, None, "Authentication-Results")
    assert [h.delay_seconds for h in verdict.hops] == [None, 1.0, 1.0]
    assert verdict.arrived_at == utc(2026, 11, 27, 14, 5, 53)


def test_ar_below_the_second_received_is_not_merged():
    # The fixture's last AR (dmarc=fail, written by the sender) sits below the submission hop.
    verdict = parse_headers(load("postfix-mx-probe-test-three-ar.txt"))
    assert verdict.auth.dmarc == "pass"


def test_configured_authserv_id_selects_and_filters():
    raw = load("postfix-mx-probe-test-three-ar.txt")
    assert parse_headers(raw, authserv_id="MX.probe.test").auth.spf == "pass"
    other = parse_headers(raw, authserv_id="mx.other.example").auth
    assert (other.spf, other.dkim, other.dmarc, other.source) == (None, None, None, None)


def test_authentication_results_original_ignored_fallback_to_x_ms_exchange():
    verdict = parse_headers(load("m365-reentry-original-only.txt"))
    auth = verdict.auth
    assert auth.source == "X-MS-Exchange-Authentication-Results"
    assert (auth.spf, auth.dkim, auth.dmarc, auth.dmarc_action) == ("pass", "pass", "pass", "none")
    assert auth.compauth is None
    assert (verdict.spam.scl, verdict.spam.sfv, verdict.spam.cat) == (-1, "SKI", "NONE")
    assert verdict.arrived_at == utc(2022, 12, 20, 9, 1, 30, 326000)


def test_microsoft_form_takes_only_the_topmost_header():
    # Two tenants: the receiving tenant's AR on top, the sending tenant's submission AR below.
    raw = (
        "Authentication-Results: spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=a.example;"
        " dkim=pass (signature was verified) header.d=a.example;dmarc=pass action=none"
        " header.from=a.example;compauth=pass reason=100\n"
        "Received: from x.outlook.com by y.outlook.com with Microsoft SMTP Server;"
        " Wed, 1 Apr 2026 14:05:51 +0000\n"
        "authentication-results: dkim=fail header.d=a.example;dmarc=fail action=none"
        " header.from=a.example;\n"
    )
    auth = parse_headers(raw).auth
    assert (auth.dkim, auth.dkim_all, auth.dmarc) == ("pass", ["pass"], "pass")


def test_forged_x_ms_headers_below_a_non_microsoft_receiver_are_not_trusted():
    verdict = parse_headers(load("forged-x-ms-below-postfix.txt"))
    assert (verdict.auth.spf, verdict.auth.dmarc) == ("fail", "fail")
    spam = verdict.spam
    assert (spam.scl, spam.bcl, spam.sfv, spam.cat, spam.dest) == (None, None, None, None, None)
    # the forged OriginalArrivalTime (2020) is not the arrival: the receiver's Received date is
    assert verdict.arrived_at == dt.datetime(2025, 1, 15, 11, 0, 22, tzinfo=dt.UTC)
    assert [h.delay_seconds for h in verdict.hops] == [None, 11.0]


def test_sending_tenant_stamps_below_a_non_microsoft_receiver():
    verdict = parse_headers(load("m365-outbound-via-postfix-receiver.txt"))
    spam = verdict.spam
    # Forefront/Antispam travel with the mail (the relay's outbound verdict, DIR:OUT) ...
    assert (spam.scl, spam.bcl, spam.sfv, spam.cat) == (5, 0, "SPM", "OSPM")
    # ... but organization headers (SCL -1, dest:I) and the tenant's arrival time are not ours
    assert spam.dest is None
    assert verdict.arrived_at == dt.datetime(2023, 2, 26, 1, 41, 54, tzinfo=dt.UTC)
    # the sending tenant's own AR below the receiver's is not merged in
    assert (verdict.auth.dkim, verdict.auth.dmarc, verdict.auth.dmarc_action) == (
        "pass",
        "pass",
        None,
    )


def test_microsoft_ar_below_a_receiver_without_its_own_ar_is_not_this_copys_verdict():
    text = load("m365-outbound-via-postfix-receiver.txt").decode()
    lines = text.splitlines(keepends=True)
    no_receiver_ar = "".join(x for x in lines if not x.startswith("Authentication-Results:"))
    relayed = no_receiver_ar + (
        "X-MS-Exchange-Authentication-Results: spf=pass (sender IP is 192.0.2.5)"
        " smtp.mailfrom=contoso.com; dkim=none;dmarc=pass action=none header.from=contoso.com;\n"
    )
    auth = parse_headers(relayed).auth
    # only the sending tenant's `authentication-results: dkim=none ...` and its relay evaluation
    # remain: neither is what the receiving Postfix decided
    assert (auth.spf, auth.dkim, auth.dmarc, auth.source) == (None, None, None, None)


def test_organization_scl_preferred_over_forefront_scl():
    raw = (
        "Received: from a.prod.outlook.com by b.prod.outlook.com with HTTPS;"
        " Wed, 1 Apr 2026 14:05:55 +0000\n"
        "X-Forefront-Antispam-Report: CIP:192.0.2.1;SCL:5;SFV:SPM;CAT:SPM;\n"
        "X-MS-Exchange-Organization-SCL: 6\n"
    )
    assert parse_headers(raw).spam.scl == 6
    assert parse_headers(raw.replace("X-MS-Exchange-Organization-SCL: 6\n", "")).spam.scl == 5


def test_topmost_forefront_report_wins():
    raw = (
        "x-forefront-antispam-report: CIP:192.0.2.1;SCL:1;SFV:NSPM;CAT:NONE;DIR:INB;\n"
        "X-Forefront-Antispam-Report: CIP:255.255.255.255;SCL:5;SFV:SPM;CAT:OSPM;DIR:OUT;\n"
    )
    assert (parse_headers(raw).spam.sfv, parse_headers(raw).spam.cat) == ("NSPM", "NONE")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("01 Apr 2026 14:05:51.2293 (UTC)", utc(2026, 4, 1, 14, 5, 51, 229300)),
        ("01 Apr 2026 14:05:51.2293\r\n (UTC)", utc(2026, 4, 1, 14, 5, 51, 229300)),
        ("8 Jul 2026 05:00:55 (UTC)", utc(2026, 7, 8, 5, 0, 55)),
        ("not a time", None),
        ("31 Feb 2026 10:00:00.0000 (UTC)", None),
    ],
)
def test_original_arrival_time_format(value, expected):
    assert parse_arrival_time(value) == expected


def test_split_headers_unfolds_decodes_and_skips_non_headers():
    raw = b"# source: x\r\nSubject: =?utf-8?Q?Gr=C3=BC=C3=9Fe?=\r\n  from\r\n\tfar\r\nX-A:x\r\n"
    assert split_headers(raw) == [("subject", "Grüße from far"), ("x-a", "x")]


def test_no_headers_gives_an_empty_verdict():
    verdict = parse_headers(b"just some text\nwithout headers\n")
    assert verdict.to_dict()["auth"]["spf"] is None
    assert (verdict.hops, verdict.arrived_at) == ([], None)


def test_the_corpus_is_in_the_repository():
    assert len(CORPUS_FILES) >= 60  # an empty glob would silently parametrise nothing


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_every_corpus_file_parses_to_known_vocabulary(path):
    verdict = parse_headers(header_block(path.read_bytes()))
    auth = verdict.auth
    assert auth.spf is None or auth.spf in SPF
    assert auth.dkim is None or auth.dkim in DKIM
    assert auth.dmarc is None or auth.dmarc in DMARC
    assert all(result in DKIM for result in auth.dkim_all)
    assert verdict.spam.scl is None or -1 <= verdict.spam.scl <= 9
    assert verdict.to_dict().keys() == {"auth", "spam"}


CORPUS_EXPECTED = {
    # protonmail splits per method: five ARs, two dkim verifiers
    "non-m365-multiple-ar-protonmail-forward.txt": ("pass", "pass", ["pass", "pass"], "pass"),
    # a list server: dkim AR above its own Received, the others below; an earlier pass further down
    "non-m365-list-server-arc-chain-dkim-fail-after-relay.txt": ("fail", "fail", ["fail"], "fail"),
    # a list server: ARs around an ARC set, forged X-Ms-Exchange-Organization-Authas below
    "forged-x-ms-exchange-organization-authas-internal-phish.txt": ("fail", None, [], "fail"),
    # Authentication-Results-Original (other receiver, dkim=none) below the real AR
    "outlookcom-inbound-authentication-results-original-inbound.txt": (
        "pass",
        "pass",
        ["pass"],
        "pass",
    ),
    "outlookcom-inbound-dmarc-temperror.txt": ("pass", "pass", ["timeout", "pass"], "temperror"),
    # the only AR is the sending tenant's submission stamp below a mailing-list receiver
    "m365-outbound-2019-spf-none-empty-sender-ip.txt": (None, None, [], None),
}


@pytest.mark.parametrize(("name", "expected"), sorted(CORPUS_EXPECTED.items()))
def test_corpus_exact_values(name, expected):
    auth = parse_headers(header_block((CORPUS / name).read_bytes())).auth
    assert (auth.spf, auth.dkim, auth.dkim_all, auth.dmarc) == expected
