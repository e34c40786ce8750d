"""`relayprobe explain`: every table entry explained from one table, human and JSON, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from probe.m365.codes import AADSTS, CODE_MEANINGS, SMTP_CODES, Code, entries_for
from probe.result import CONFIGURATION_REASONS
from probe.smtp.replies import classify_auth_reply, classify_submit_reply
from relayprobe.explain import ACCEPTED, explain, run_explain

ROOT = Path(__file__).parents[2]
KEYS = {
    "input", "known", "kind", "code", "reply_code", "table_code", "applies_when", "reason",
    "class", "meaning", "cause", "action", "docs", "example", "variants",
}  # fmt: skip
REPLY_515 = (
    "550 5.7.515 Access denied, sending domain contoso.com doesn't meet the required "
    "authentication level."
)


def run(text: str, *, as_json: bool = False, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_explain(text, as_json=as_json, out=out, err=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relayprobe", "explain", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def flat(text: str) -> str:
    """The text with its wrapping undone (the human form wraps at 100 columns)."""
    return " ".join(text.split())


def expected_class(entry: Code) -> str:
    return "configuration" if entry.reason in CONFIGURATION_REASONS else "temporary"


@pytest.mark.parametrize("entry", SMTP_CODES, ids=lambda c: f"{c.enhanced}:{c.match or '*'}")
def test_every_table_entry_is_explained_from_its_reply_line(entry: Code) -> None:
    doc = explain(entry.example)
    assert doc["known"] and doc["kind"] == "smtp" and doc["variants"] == []
    assert (doc["meaning"], doc["cause"], doc["action"], doc["docs"]) == (
        entry.meaning,
        entry.cause,
        entry.remedy,
        entry.docs,
    )
    assert (doc["reason"], doc["class"]) == (entry.reason.value, expected_class(entry))
    # The same conclusion as the probe's own classification of that reply (one table).
    code, _, text = entry.example.partition(" ")
    for classify in (classify_auth_reply, classify_submit_reply):
        got = classify(int(code), text)
        assert (got.reason.value, got.remedy) == (doc["reason"], doc["action"])
    status, out, err = run(entry.example)
    assert (status, err) == (0, "")
    assert flat(entry.meaning) in flat(out) and flat(entry.remedy) in flat(out)


@pytest.mark.parametrize("code", sorted({c.enhanced for c in SMTP_CODES if "-" not in c.enhanced}))
def test_every_bare_code_is_explained_with_all_its_variants(code: str) -> None:
    entries = entries_for(code)
    doc = explain(code)
    assert doc["known"] and doc["code"] == code and doc["reply_code"] is None
    if len(entries) == 1:
        assert doc["meaning"] == entries[0].meaning and doc["action"] == entries[0].remedy
    else:
        assert doc["meaning"] == CODE_MEANINGS[code]
        assert [v["action"] for v in doc["variants"]] == [e.remedy for e in entries]
        assert all(e.remedy in doc["action"] for e in entries)
    assert run(code)[0] == 0


@pytest.mark.parametrize("code", sorted(AADSTS))
def test_every_aadsts_code_is_explained_alone_and_in_entra_text(code: str) -> None:
    number = code.removeprefix("AADSTS")
    for text in (code, f"invalid_client: {code}: Something went wrong.\r\nTrace ID: 1234"):
        doc = explain(text)
        assert doc["known"] and doc["kind"] == "aadsts" and doc["code"] == code
        error = AADSTS[code]
        assert (doc["meaning"], doc["action"], doc["cause"]) == (
            error.meaning,
            error.remedy,
            error.cause,
        )
        assert (doc["reason"], doc["class"]) == ("oauth_token_failed", "configuration")
        assert doc["docs"] == f"https://login.microsoftonline.com/error?code={number}"


def test_explain_4_7_320_certificate_validation() -> None:
    status, out, err = run("4.7.320")
    assert (status, err) == (0, "")
    assert out.startswith("4.7.320  smtp_temporary_failure (temporary class")
    assert "certificate validation failed" in out
    assert "renew or replace the destination server's certificate" in flat(out)
    assert "connectors-mail-flow-intelligence" in out


def test_explain_a_5_7_515_reply_line() -> None:
    doc = explain(REPLY_515)
    assert (doc["code"], doc["reply_code"], doc["reason"]) == ("5.7.515", 550, "smtp_rejected")
    assert "required authentication level" in doc["meaning"]
    assert "5,000 messages a day" in doc["cause"] and "5 May 2025" in doc["cause"]
    assert all(word in doc["action"] for word in ("SPF", "DKIM", "DMARC"))
    status, out, _ = run(REPLY_515)
    assert status == 0
    assert out.startswith("550 5.7.515  smtp_rejected (temporary class; relayprobe backs off")


def test_explain_aadsts7000215() -> None:
    status, out, err = run("AADSTS7000215")
    assert (status, err) == (0, "")
    assert out.startswith("AADSTS7000215  oauth_token_failed (configuration class")
    assert "meaning: invalid client secret" in out
    assert "use the secret VALUE (not its ID)" in flat(out)


def test_explain_5_7_139_lists_every_variant_with_its_action() -> None:
    doc = explain("5.7.139")
    assert doc["meaning"] == CODE_MEANINGS["5.7.139"]
    assert doc["class"] == "configuration" and doc["reason"] is None  # two reasons among them
    assert [v["reason"] for v in doc["variants"]] == [
        "auth_basic_disabled",
        "auth_failed",
        "auth_failed",
        "auth_basic_disabled",
        "auth_failed",
    ]
    status, out, _ = run("5.7.139")
    assert status == 0 and out.startswith("5.7.139  5 variants, told apart by the reply text")
    text = flat(out)
    assert '- "for the tenant": auth_failed (configuration class)' in text
    assert "Set-TransportConfig -SmtpClientAuthenticationDisabled $false" in text
    assert "switch the target to auth.method oauth2" in text


def test_reply_text_picks_the_variant_like_the_classifier() -> None:
    tenant = (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
    )
    doc = explain(tenant)
    assert doc["applies_when"] == "for the tenant" and doc["variants"] == []
    assert doc["docs"] == "https://aka.ms/smtp_auth_disabled"
    # Without a reply code, a fragment of a variant's text still picks it.
    assert explain("Status: 5.7.139 SmtpClientAuthentication is disabled for the Mailbox")[
        "applies_when"
    ] == ("for the mailbox")


@pytest.mark.parametrize(
    "text",
    [
        "Remote Server returned '550 5.7.515 Access denied, sending domain contoso.com does not "
        "meet the required authentication level.'",
        "Diagnostic-Code: smtp; 550 5.7.515 Access denied, sending domain contoso.com does not "
        "meet the required authentication level.",
        "550-5.7.515 Access denied",
        "#550 5.7.515 Access denied ##",
        # As Microsoft's Outlook.com sender page writes it.
        "550; 5.7.515 Access denied, sending domain [SendingDomain] does not meet the required "
        "authentication level.",
    ],
)
def test_reply_lines_are_found_where_ndrs_and_logs_quote_them(text: str) -> None:
    doc = explain(text)
    assert (doc["code"], doc["reply_code"], doc["reason"]) == ("5.7.515", 550, "smtp_rejected")


def test_json_has_every_field_for_known_and_unknown_input() -> None:
    status, out, _ = run("4.7.320", as_json=True)
    doc = json.loads(out)
    assert status == 0 and set(doc) == KEYS
    assert doc["known"] is True and doc["kind"] == "smtp" and doc["class"] == "temporary"
    assert all(doc[k] for k in ("meaning", "cause", "action", "docs", "reason"))
    status, out, err = run("5.7.999", as_json=True)
    doc = json.loads(out)
    assert status == 1 and set(doc) == KEYS and doc["known"] is False
    assert (doc["kind"], doc["code"], doc["meaning"], doc["action"]) == (
        "smtp",
        "5.7.999",
        None,
        None,
    )
    assert "5.7.999 is not in relayprobe's table" in err
    doc = json.loads(run("5.7.139", as_json=True)[1])
    assert set(doc["variants"][0]) == KEYS - {
        "input",
        "known",
        "kind",
        "code",
        "reply_code",
        "variants",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5.7.999", "5.7.999 is not in relayprobe's table of Microsoft 365 codes"),
        ("AADSTS12345", "https://login.microsoftonline.com/error?code=12345"),
        ("the printer says no", "no status code and no AADSTS code found"),
        ("432 4.3.2 Temporary server error", "only with specific reply texts"),
        ("454 5.7.3 odd", "the reply class and the enhanced code disagree"),
    ],
)
def test_unknown_input_exits_1_and_names_the_accepted_forms(text: str, message: str) -> None:
    status, out, err = run(text)
    assert (status, out) == (1, "")
    assert message in err and ACCEPTED in flat(err)


def test_nothing_to_explain_is_a_usage_error() -> None:
    status, out, err = run("   ")
    assert (status, out) == (3, "") and ACCEPTED in flat(err)


def test_stdin_holds_a_pasted_multi_line_error() -> None:
    pasted = "AADSTS700016: Application with identifier 'x' was not found\r\nTrace ID: 1\r\n"
    status, out, _ = run("-", stdin=pasted)
    assert status == 0 and out.startswith("AADSTS700016  oauth_token_failed")


def test_human_output_is_one_block() -> None:
    for text in ("4.7.320", REPLY_515, "AADSTS7000215", "5.7.139"):
        out = run(text)[1]
        assert out.endswith("\n") and "\n\n" not in out
        assert all(len(line) <= 100 or "https://" in line for line in out.splitlines())


def test_the_real_command_line() -> None:
    cases = [
        (("4.7.320",), "certificate validation failed"),
        ((REPLY_515,), "required authentication level"),
        (("AADSTS7000215",), "invalid client secret"),
        (("5.7.139",), "SMTP AUTH is off for the tenant"),
        # Unquoted, as typed in a hurry: the words are one reply line again.
        (("550", "5.7.515", "Access", "denied"), "550 5.7.515  smtp_rejected"),
    ]
    for args, words in cases:
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert words in proc.stdout and proc.stderr == ""
    proc = cli("--json", "AADSTS7000215")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and set(doc) == KEYS
    assert (doc["kind"], doc["reason"], doc["class"]) == (
        "aadsts",
        "oauth_token_failed",
        "configuration",
    )
    proc = cli("5.7.999")
    assert proc.returncode == 1 and proc.stdout == "" and "It accepts" in proc.stderr
    proc = cli("-", stdin="451 4.4.316 Connection refused\n")
    assert proc.returncode == 0 and proc.stdout.startswith("451 4.4.316  smtp_temporary_failure")
    proc = cli()
    assert proc.returncode == 3 and "CODE" in proc.stderr
