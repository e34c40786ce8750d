"""`relayprobe analyze`: readable and JSON output, exit codes, stdin."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from relayprobe.analyze import run_analyze

FIXTURES = Path(__file__).parents[1] / "fixtures" / "headers"
ROOT = Path(__file__).parents[2]


def run(path: str, *, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_analyze(path, as_json=as_json, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_readable_output_names_every_part():
    code, out, err = run(str(FIXTURES / "m365-inbound-junk-two-dkim.eml"))
    assert (code, err) == (0, "")
    assert "Authentication (from Authentication-Results):" in out
    assert "  dkim      pass   (all signatures: pass, fail)" in out
    assert "  dmarc     pass   action=none" in out
    assert "  compauth  pass   reason=100" in out
    assert "Spam: SCL 5  BCL 3  SFV SPM  CAT SPM  dest J (Junk Email)" in out
    hop = "mail60.example.com -> CO1PEPF000066E8.mail.protection.outlook.com"
    assert f"  2. {hop}  2026-04-01T14:05:51.000Z  +1 s\n" in out
    assert "Arrived: 2026-04-01T14:05:51.229Z" in out
    assert out.endswith(
        "Verdict: SCL 5 + SFV:SPM: Microsoft filtered this as spam,"
        " delivered to Junk Email (dest:J)\n"
    )


def test_json_output_is_the_contract_plus_everything_the_text_shows():
    path = str(FIXTURES / "m365-2020-recipient-domain-tokens.txt")
    code, out, _ = run(path, as_json=True)
    assert code == 0
    doc = json.loads(out)
    assert {k: doc["auth"][k] for k in doc["auth"] if k != "dkim_all"} == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
        "dmarc_action": "none",
        "compauth": None,
        "compauth_reason": None,
        "source": "Authentication-Results",
    }
    assert doc["spam"] == {"scl": 1, "bcl": 0, "sfv": "NSPM", "cat": "NONE", "dest": None}
    _, text, _ = run(path)
    # Every hop, the arrival time and the verdict line of the text form are in the JSON too.
    assert doc["arrived_at"] in text and doc["verdict"] in text
    assert doc["hops"] and all(hop["by"] in text and hop["at"] in text for hop in doc["hops"])
    assert doc["auth"]["dkim_all"] == ["pass"]


def test_interpretation_for_non_microsoft_receiver_and_dmarc_failure():
    _, out, _ = run(str(FIXTURES / "forged-x-ms-below-postfix.txt"))
    assert out.endswith(
        "Verdict: no trusted Microsoft spam stamps (receiver is not Exchange Online);"
        " DMARC failed\n"
    )


def test_interpretation_names_microsofts_dmarc_action(tmp_path):
    block = tmp_path / "oreject.txt"
    block.write_bytes(
        b"Authentication-Results: spf=fail (sender IP is 192.0.2.9) smtp.mailfrom=a.example;\r\n"
        b" dkim=none (message not signed) header.d=none;dmarc=fail action=oreject\r\n"
        b" header.from=bank.example;compauth=fail reason=000\r\n"
        b"X-MS-Exchange-Organization-SCL: 9\r\n"
        b"X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:I;\r\n"
    )
    code, out, _ = run(str(block))
    assert code == 0
    assert "  dmarc     fail   action=oreject\n" in out
    assert "  compauth  fail   reason=000\n" in out
    assert out.endswith(
        "Verdict: SCL 9: Microsoft filtered this as high-confidence spam;"
        " DMARC failed (action oreject), delivered to Inbox (dest:I)\n"
    )


def test_interpretation_scl_minus_one_skip():
    _, out, _ = run(str(FIXTURES / "m365-reentry-original-only.txt"))
    assert "Verdict: SFV:SKI: filtering skipped (IP Allow List or same-tenant mail)\n" in out


def test_unreadable_file_exits_2_with_a_clear_message(tmp_path):
    code, out, err = run(str(tmp_path / "missing.eml"))
    assert (code, out) == (2, "")
    assert f"cannot read {tmp_path / 'missing.eml'}: No such file or directory" in err
    assert "or - for standard input" in err


def test_no_recognised_header_exits_1_and_still_prints_the_shape(tmp_path):
    body_only = tmp_path / "body.txt"
    body_only.write_bytes(b"Hello,\r\nthis is only a body.\r\n")
    code, out, err = run(str(body_only), as_json=True)
    assert code == 1
    doc = json.loads(out)
    assert doc["spam"] == {"scl": None, "bcl": None, "sfv": None, "cat": None, "dest": None}
    assert (doc["hops"], doc["arrived_at"]) == ([], None)
    assert "no Authentication-Results, Microsoft spam or Received header" in err


def test_stdin_dash_reads_bytes():
    # A child process, so `-` really reads this process's standard input (CRLF bytes).
    script = (
        "import sys; from relayprobe.analyze import run_analyze; "
        "sys.exit(run_analyze('-', as_json=True, out=sys.stdout, err=sys.stderr))"
    )
    data = (FIXTURES / "m365-inbound-rfc2047-ar.txt").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr
    auth = json.loads(proc.stdout)["auth"]
    assert (auth["spf"], auth["compauth"], auth["compauth_reason"]) == ("fail", "fail", "001")
