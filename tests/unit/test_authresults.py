"""Authentication-Results value parser: one case per pitfall seen in real headers.

The pitfalls are listed in docs/m365.md#authentication-results (Exchange Online) and
docs/m365.md#rfc-8601-receivers (other receivers).
"""

from __future__ import annotations

import base64
import random

import pytest

from probe.verdict.authresults import MethodResult, parse_authentication_results

MS_2026 = (
    "spf=pass (sender IP is 198.51.100.60)\r\n smtp.mailfrom=em-1234.example.com; dkim=pass"
    " (signature was\r\n verified) header.d=example.com;dkim=pass (signature was verified)\r\n"
    " header.d=mailer.example.net;dmarc=pass action=none\r\n"
    " header.from=example.com;compauth=pass reason=100"
)


def methods(value: str) -> list[tuple[str, str]]:
    return [(r.method, r.result) for r in parse_authentication_results(value).results]


def test_microsoft_form_has_no_authserv_id_and_parses_every_result():
    parsed = parse_authentication_results(MS_2026)
    assert parsed.authserv_id is None
    assert parsed.results == [
        MethodResult(
            "spf",
            "pass",
            None,
            "sender IP is 198.51.100.60",
            {"smtp.mailfrom": "em-1234.example.com"},
        ),
        MethodResult("dkim", "pass", None, "signature was verified", {"header.d": "example.com"}),
        MethodResult(
            "dkim", "pass", None, "signature was verified", {"header.d": "mailer.example.net"}
        ),
        MethodResult("dmarc", "pass", None, None, {"action": "none", "header.from": "example.com"}),
        MethodResult("compauth", "pass", "100", None, {"reason": "100"}),
    ]


def test_authres_package_rejects_the_microsoft_form_that_we_accept():
    # Why this module exists instead of `authres`: its parser requires an authserv-id.
    import authres  # a test dependency (pyproject [test]): the comparison must always run

    with pytest.raises(authres.core.SyntaxError, match="Expected"):
        authres.AuthenticationResultsHeader.parse_value(MS_2026)
    assert methods(MS_2026)[0] == ("spf", "pass")


def test_missing_spaces_after_semicolons():
    value = (
        "spf=none (sender IP is 192.0.2.1) smtp.mailfrom=a.example;dkim=none;dmarc=fail "
        "action=oreject header.from=a.example;compauth=fail reason=000"
    )
    assert methods(value) == [
        ("spf", "none"),
        ("dkim", "none"),
        ("dmarc", "fail"),
        ("compauth", "fail"),
    ]
    dmarc = parse_authentication_results(value).results[2]
    assert dmarc.props == {"action": "oreject", "header.from": "a.example"}


def test_bare_recipient_domain_tokens_are_skipped_and_are_no_authserv_id():
    value = (
        "spf=pass (sender IP is 192.0.2.202) smtp.mailfrom=bounces.example.org; hotmail.com; "
        "dkim=pass (signature was verified) header.d=example.org;hotmail.com; dmarc=pass "
        "action=none header.from=example.org;"
    )
    assert methods(value) == [("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")]
    leading = (
        "ucw.example; dkim=none (message not signed)\n header.d=none;ucw.example; dmarc=none "
        "action=none header.from=example.com;"
    )
    parsed = parse_authentication_results(leading)
    assert parsed.authserv_id is None  # the recipient domain repeats as a bare token: not an id
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "none"), ("dmarc", "none")]


def test_whole_value_rfc2047_encoded():
    plain = (
        "spf=fail (sender IP is 203.0.113.30) smtp.mailfrom=example.net; dkim=none (message not "
        "signed) header.d=none;dmarc=none action=none header.from=b\u00fccher.example;"
    )
    raw = plain.encode()
    words = [raw[i : i + 40] for i in range(0, len(raw), 40)]
    encoded = "\r\n ".join(f"=?utf-8?B?{base64.b64encode(w).decode()}?=" for w in words)
    parsed = parse_authentication_results(encoded)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "fail"),
        ("dkim", "none"),
        ("dmarc", "none"),
    ]
    assert parsed.results[2].props["header.from"] == "b\u00fccher.example"


def test_value_starting_on_the_continuation_line():
    value = "\r\n\tspf=pass (sender IP is 192.0.2.9)\r\n\tsmtp.mailfrom=a.example; dkim=none"
    assert methods(value) == [("spf", "pass"), ("dkim", "none")]


def test_gmail_rfc8601_form():
    value = (
        "mx.google.com;\r\n"
        "       dkim=pass header.i=@example.com header.s=20161025 header.b=EOkHN4OY;\r\n"
        "       spf=pass (google.com: domain of a@example.com designates 192.0.2.65 as permitted"
        " sender) smtp.mailfrom=a@example.com;\r\n"
        "       dmarc=pass (p=NONE sp=QUARANTINE dis=NONE) header.from=example.com"
    )
    parsed = parse_authentication_results(value)
    assert parsed.authserv_id == "mx.google.com"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("dmarc", "pass"),
    ]
    assert parsed.results[0].props == {
        "header.i": "@example.com",
        "header.s": "20161025",
        "header.b": "EOkHN4OY",
    }
    assert parsed.results[2].comment == "p=NONE sp=QUARANTINE dis=NONE"


def test_semicolon_inside_comment_does_not_split_the_result():
    value = (
        "lists.example.org;\n\tdkim=pass (1024-bit key; unprotected) header.d=example.org "
        "header.i=@example.org header.a=rsa-sha256 header.s=sel1 header.b=leizRVeD;\n"
        "\tdkim-atps=neutral"
    )
    parsed = parse_authentication_results(value)
    assert parsed.authserv_id == "lists.example.org"
    assert parsed.results[0].comment == "1024-bit key; unprotected"
    assert parsed.results[0].props["header.b"] == "leizRVeD"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "pass"),
        ("dkim-atps", "neutral"),
    ]
    spf = (
        "lists.example.org; spf=pass (sender SPF authorized) smtp.mailfrom=example.org "
        "(client-ip=192.0.2.1; helo=mx.example.org; receiver=lists.example.org)"
    )
    assert parse_authentication_results(spf).results == [
        MethodResult("spf", "pass", None, "sender SPF authorized", {"smtp.mailfrom": "example.org"})
    ]


def test_quoted_property_values_and_quoted_reason():
    value = (
        'smtp.subspace.example; dkim=fail reason="signature verification failed" (1024-bit key) '
        'header.d=example.com header.b="fYd9G8pK"; spf=pass '
        'smtp.mailfrom="list+bounces-1=x@example.org"'
    )
    parsed = parse_authentication_results(value)
    dkim, spf = parsed.results
    assert (dkim.result, dkim.reason, dkim.comment) == (
        "fail",
        "signature verification failed",
        "1024-bit key",
    )
    assert dkim.props["header.b"] == "fYd9G8pK"
    assert spf.props == {"smtp.mailfrom": "list+bounces-1=x@example.org"}


@pytest.mark.parametrize(
    ("value", "result", "action"),
    [
        ("dmarc=bestguesspass action=none header.from=example.com", "bestguesspass", "none"),
        ("dmarc=fail action=oreject header.from=example.com", "fail", "oreject"),
        ("dmarc=fail action=opctreject header.from=example.com", "fail", "opctreject"),
        ("dmarc=fail action=pct.quarantine header.from=example.com", "fail", "pct.quarantine"),
    ],
)
def test_microsoft_dmarc_results_and_actions(value, result, action):
    (dmarc,) = parse_authentication_results(value).results
    assert (dmarc.method, dmarc.result, dmarc.props["action"]) == ("dmarc", result, action)


def test_result_tokens_are_lower_cased_and_values_kept():
    (spf,) = parse_authentication_results("SPF=PASS smtp.mailfrom=Example.COM").results
    assert (spf.method, spf.result, spf.props) == ("spf", "pass", {"smtp.mailfrom": "Example.COM"})


def test_arc_authentication_results_instance_tag_and_version():
    value = (
        "i=1; mx.microsoft.com 1; spf=pass smtp.mailfrom=a.example; arc=pass (0 oda=1 ltdi=1 "
        "spf=[1,1,smtp.mailfrom=a.example])"
    )
    parsed = parse_authentication_results(value)
    assert parsed.authserv_id == "mx.microsoft.com"
    assert [(r.method, r.result) for r in parsed.results] == [("spf", "pass"), ("arc", "pass")]


def test_unbalanced_comment_does_not_swallow_later_results():
    value = (
        "dkim=fail (body hash mismatch (got b'x', expected b'y') header.d=a.example;dmarc=pass "
        "action=none"
    )
    dkim, dmarc = parse_authentication_results(value).results
    assert dkim.comment == "body hash mismatch (got b'x', expected b'y'"
    assert dkim.props == {"header.d": "a.example"}
    assert (dmarc.result, dmarc.props) == ("pass", {"action": "none"})


def test_empty_values_none_results_and_base64_padding():
    assert methods("mx.example; none") == []
    (dmarc,) = parse_authentication_results("dmarc=none action=none header.from=;").results
    assert dmarc.props == {"action": "none", "header.from": ""}
    (dkim,) = parse_authentication_results("mx.example; dkim=pass header.b=ab+/cd==").results
    assert dkim.props["header.b"] == "ab+/cd=="


def test_missing_semicolon_before_a_known_method_still_splits():
    assert methods("dkim=pass header.d=a.example dmarc=pass header.from=a.example") == [
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]


def test_srs_address_with_equals_signs_stays_one_value():
    (spf,) = parse_authentication_results(
        "mx.example; spf=pass smtp.mailfrom=SRS0=AbCd=XY=example.com=user@fwd.example.net"
    ).results
    assert spf.props == {"smtp.mailfrom": "SRS0=AbCd=XY=example.com=user@fwd.example.net"}


def test_broken_encoded_words_keep_the_raw_text():
    bad_base64 = "=?utf-8?B?c3BmP?= dkim=pass header.d=a.example"  # 4n+1 chars: undecodable
    bad_charset = "=?us\ufffdascii?Q?x?= dkim=pass header.d=a.example"  # CharsetError
    assert methods(bad_base64) == [("dkim", "pass")]
    assert methods(bad_charset) == [("dkim", "pass")]


@pytest.mark.parametrize(
    "junk", ["", ";;;", "((((", '"', "x=", "=;=;(", ")))", "=?utf-8?B?!!?=", "\x00\xff"]
)
def test_junk_never_raises(junk):
    assert parse_authentication_results(junk).results == []


def test_random_junk_never_raises():
    rng = random.Random(8601)
    alphabet = 'ab=;()"\\ .\r\n\t@' + "spfdkimarc"
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        parsed = parse_authentication_results(value)
        assert all(r.result for r in parsed.results)
