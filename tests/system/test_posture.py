"""relayprobe posture against real DNS servers: our own dnsmasq with crafted records, the mail
testbed's DNS, a server that never answers, and an HTTPS MTA-STS policy on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from probe.posture import PostureSettings, PostureState, check_domain
from tests.posture.fixture import PostureDns

MS = "spf.protection.outlook.com"


def settings(server: str, **over: object) -> PostureSettings:
    base = {"dns_server": server, "timeout": 2.0, "required_include": MS}
    return PostureSettings(**{**base, **over})  # type: ignore[arg-type]


def states(report) -> dict[str, str]:
    return {c.name: c.state.value for c in report.checks}


def by_name(report, name: str):
    return next(c for c in report.checks if c.name == name)


def test_good_domain_every_check_ok(posture_dns: PostureDns, posture_ca) -> None:
    _ca, ca_file = posture_ca
    report = check_domain(
        "good.test",
        settings(posture_dns.server, ca_file=ca_file, tenant="contoso"),
        ip="40.107.22.54",
    )
    assert states(report) == {
        "spf": "ok",
        "spf_lookups": "ok",
        "spf_include": "ok",
        "spf_ip": "ok",
        "dkim:selector1": "ok",
        "dkim:selector2": "ok",
        "dmarc": "ok",
        "dmarc_reports": "ok",
        "mx": "ok",
        "mta_sts": "ok",
        "mta_sts_policy": "ok",
        "tls_rpt": "ok",
    }, [c.message for c in report.checks]
    assert report.state is PostureState.OK
    assert by_name(report, "dkim:selector1").details["bits"] == 2048
    assert by_name(report, "dkim:selector1").details["tenant"] == "contoso"
    assert "mode enforce" in by_name(report, "mta_sts_policy").message
    assert report.records()["spf"] == f"v=spf1 ip4:192.0.2.10 include:{MS} -all"
    assert report.records()["dmarc"] == "v=DMARC1; p=reject; rua=mailto:dmarc@good.test"


def test_mta_sts_policy_needs_a_trusted_certificate(posture_dns: PostureDns) -> None:
    # Without our test CA the system store does not trust the policy server: verified, refused.
    report = check_domain("good.test", settings(posture_dns.server))
    policy = by_name(report, "mta_sts_policy")
    assert policy.state is PostureState.WARNING
    assert "certificate verify failed" in policy.message


def test_dkim_cname_to_another_tenant_is_a_warning(posture_dns: PostureDns) -> None:
    report = check_domain("good.test", settings(posture_dns.server, tenant="fabrikam"))
    check = by_name(report, "dkim:selector1")
    assert check.state is PostureState.WARNING
    assert "tenant contoso, not fabrikam" in check.message


def test_spf_without_microsofts_include(posture_dns: PostureDns) -> None:
    report = check_domain("noinclude.test", settings(posture_dns.server), ip="40.107.22.54")
    assert by_name(report, "spf").state is PostureState.OK
    include = by_name(report, "spf_include")
    assert include.state is PostureState.CRITICAL
    assert f"lacks include:{MS}" in include.message and f"add include:{MS}" in include.remedy
    spf_ip = by_name(report, "spf_ip")
    assert spf_ip.state is PostureState.CRITICAL
    assert spf_ip.message == (
        "40.107.22.54 is not authorised by noinclude.test's SPF record "
        "(v=spf1 include:_spf.mailer.test -all)"
    )


def test_direct_send_does_not_require_the_include(posture_dns: PostureDns) -> None:
    report = check_domain("noinclude.test", settings(posture_dns.server, required_include=None))
    assert "spf_include" not in states(report)


def test_eleven_lookups(posture_dns: PostureDns) -> None:
    report = check_domain("eleven.test", settings(posture_dns.server), ip="40.107.22.54")
    lookups = by_name(report, "spf_lookups")
    assert lookups.state is PostureState.CRITICAL
    assert lookups.details["lookups"] == 11 and "11 DNS lookups" in lookups.message
    assert by_name(report, "spf_include").state is PostureState.OK  # it is there, just too late
    assert by_name(report, "spf_ip").details["result"] == "permerror"


def test_spf_syntax_error(posture_dns: PostureDns) -> None:
    report = check_domain("syntax.test", settings(posture_dns.server))
    spf = by_name(report, "spf")
    assert spf.state is PostureState.CRITICAL
    assert "includ is not a valid SPF mechanism" in spf.message
    assert spf.value == f"v=spf1 ip4:192.0.2.10 includ:{MS} -all"


def test_missing_dkim_selector_and_short_key(posture_dns: PostureDns) -> None:
    s = settings(posture_dns.server, dkim_selectors=("selector1", "selector2", "short"))
    report = check_domain("nodkim.test", s)
    assert by_name(report, "dkim:selector1").state is PostureState.OK
    missing = by_name(report, "dkim:selector2")
    assert missing.state is PostureState.CRITICAL
    assert "no DKIM key at selector2._domainkey.nodkim.test (NXDOMAIN)" in missing.message
    assert "enable DKIM signing" in missing.remedy
    short = by_name(report, "dkim:short")
    assert short.state is PostureState.WARNING and short.details["bits"] == 1024


def test_refused_is_dns_trouble_not_a_failure(posture_dns: PostureDns) -> None:
    # Outside our dnsmasq's local zones and without an upstream: it answers REFUSED.
    report = check_domain("refused.example", settings(posture_dns.server))
    assert set(states(report).values()) == {"dns_error"}
    assert "REFUSED" in by_name(report, "spf").message
    assert by_name(report, "spf").details["dns_error"] == "refused"
    assert report.records() == {}  # nothing known: no record value to remember


def test_server_that_does_not_answer(silent_dns: str) -> None:
    t0 = time.monotonic()
    report = check_domain("good.test", settings(silent_dns, timeout=1.0))
    took = time.monotonic() - t0
    assert set(states(report).values()) == {"dns_error"}, states(report)
    assert all(c.details["dns_error"] == "timeout" for c in report.checks)
    assert "no answer (timeout)" in by_name(report, "dmarc").message
    # After two timeouts the server is not asked again in this run (not a timing assertion:
    # eleven lookups at a full second each would take far longer than this bound).
    assert took < 8, took


@pytest.mark.testbed
def test_testbed_domains_dmarc_none_versus_reject(testbed) -> None:
    """The mail system's own DNS (127.0.0.153) and records: partner.test p=none, spoof.test
    p=reject, probe.test's relay IP and its tb selector."""
    server = "127.0.0.153"
    partner = check_domain("partner.test", settings(server, required_include=None))
    spoof = check_domain("spoof.test", settings(server, required_include=None))
    assert by_name(partner, "dmarc").state is PostureState.WARNING
    assert by_name(partner, "dmarc").details["p"] == "none"
    assert "monitoring only" in by_name(partner, "dmarc").message
    assert by_name(spoof, "dmarc").state is PostureState.OK
    assert by_name(spoof, "dmarc").details["p"] == "reject"
    probe = check_domain(
        "probe.test",
        settings(server, required_include=None, dkim_selectors=("tb",)),
        ip="127.0.0.2",
    )
    assert by_name(probe, "spf_ip").state is PostureState.OK
    assert by_name(probe, "dkim:tb").details["bits"] == 2048
    assert by_name(probe, "dkim:tb").state is PostureState.OK


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relayprobe", "posture", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_one_line_per_check_state_first(posture_dns: PostureDns, posture_ca) -> None:
    _ca, ca_file = posture_ca
    proc = _cli("--dns-server", posture_dns.server, "--ca-file", str(ca_file), "good.test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    head, *lines = proc.stdout.splitlines()
    assert head == f"good.test: OK (DNS {posture_dns.ip})"
    assert [line.split()[:2] for line in lines] == [
        ["OK", "spf"],
        ["OK", "spf_lookups"],
        ["OK", "spf_include"],
        ["OK", "dkim:selector1"],
        ["OK", "dkim:selector2"],
        ["OK", "dmarc"],
        ["OK", "dmarc_reports"],
        ["OK", "mx"],
        ["OK", "mta_sts"],
        ["OK", "mta_sts_policy"],
        ["OK", "tls_rpt"],
    ]


def test_cli_exit_codes_and_json(posture_dns: PostureDns, silent_dns: str) -> None:
    critical = _cli("--dns-server", posture_dns.server, "--json", "syntax.test")
    assert critical.returncode == 2, critical.stderr
    doc = json.loads(critical.stdout)
    assert doc["state"] == "critical"
    (report,) = doc["reports"]
    assert report["domain"] == "syntax.test" and report["dns_server"] == posture_dns.ip
    for check in report["checks"]:
        assert set(check) == {"check", "state", "message", "remedy", "record", "value", "details"}
    assert report["records"]["spf"] == f"v=spf1 ip4:192.0.2.10 includ:{MS} -all"
    warning = _cli("--dns-server", posture_dns.server, "--mode", "direct_send", "noinclude.test")
    assert warning.returncode == 2  # no DKIM selectors published either: critical
    assert "WARNING   dmarc " in warning.stdout
    trouble = _cli("--dns-server", silent_dns, "--timeout", "1", "good.test")
    assert trouble.returncode == 3, trouble.stdout
    assert all(line.startswith("DNS_ERROR") for line in trouble.stdout.splitlines()[1:])
    usage = _cli("--dns-server", "not-an-ip", "good.test")
    assert usage.returncode == 3 and "not an IP address" in usage.stderr


def test_changed_record_is_seen_on_the_next_run(posture_dns: PostureDns) -> None:
    s = settings(posture_dns.server)
    try:
        posture_dns.set_change(f"v=spf1 include:{MS} -all")
        before = check_domain("change.test", s).records()["spf"]
        posture_dns.set_change(f"v=spf1 ip4:203.0.113.9 include:{MS} -all")
        after = check_domain("change.test", s).records()["spf"]
    finally:
        posture_dns.set_change(f"v=spf1 include:{MS} -all")
    assert before == f"v=spf1 include:{MS} -all"
    assert after == f"v=spf1 ip4:203.0.113.9 include:{MS} -all"


DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _posture_section() -> str:
    text = DOCS.read_text()
    return text[text.index("## `posture`") : text.index("## Example")]


def test_every_documented_posture_command_runs(posture_dns: PostureDns, tmp_path: Path) -> None:
    """docs/configuration.md#posture's and README's commands as written, pointed at our dnsmasq: contoso.com
    becomes good.test, the example DNS server ours, config.yml a config of one target."""
    section = _posture_section()
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    readme = (DOCS.parents[1] / "README.md").read_text()
    lines = [
        *block.splitlines(),
        *(ln for ln in readme.splitlines() if ln.startswith("relayprobe posture")),
    ]
    commands = [ln.split("#", 1)[0].split() for ln in lines if ln.strip()]
    assert len(commands) == 5 and all(c[:2] == ["relayprobe", "posture"] for c in commands)
    yaml_block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(yaml_block)
    posture = {**doc["defaults"]["posture"], **doc["targets"][0]["posture"]}
    posture["dns_server"] = posture_dns.server
    config = {
        "tag_secret": "relayprobe-test-tag-secret-0123456789",
        "targets": [
            {
                "name": doc["targets"][0]["name"],
                "smtp": {"host": "127.0.0.1", "port": 587},
                "mail_from": "app@good.test",
                "rcpt_to": "inbox@probe.test",
                "mailbox": {
                    "host": "127.0.0.1",
                    "auth": {"method": "password", "username": "u", "password": "x" * 12},
                },
                "posture": posture,
            }
        ],
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    for argv in commands:
        argv = [
            {
                "contoso.com": "good.test",
                "192.0.2.53:53": posture_dns.server,
                "config.yml": str(path),
            }.get(a, a)
            for a in argv[2:]
        ]
        if "--dns-server" not in argv and "--config" not in argv:
            argv += ["--dns-server", posture_dns.server]
        proc = _cli(*argv)
        assert proc.returncode in (0, 1, 2), (argv, proc.stdout, proc.stderr)
        if "--json" in argv:
            assert json.loads(proc.stdout)["reports"][0]["domain"] == "good.test"
            continue
        head, *lines = proc.stdout.splitlines()
        assert head.startswith("good.test: "), proc.stdout
        assert lines and all(
            ln.split()[0] in {"OK", "WARNING", "CRITICAL", "DNS_ERROR"} for ln in lines
        )


@pytest.mark.parametrize(("kind", "shown"), [("servfail", "SERVFAIL"), ("lame", "a lame answer")])
def test_servfail_and_lame_answers_are_dns_trouble(misbehaving_dns, kind: str, shown: str) -> None:
    report = check_domain("good.test", settings(misbehaving_dns(kind)))
    assert set(states(report).values()) == {"dns_error"}, [c.message for c in report.checks]
    spf = by_name(report, "spf")
    assert spf.details["dns_error"] == kind and shown in spf.message
    assert report.records() == {}


def test_an_include_that_does_not_answer_is_dns_trouble(posture_dns: PostureDns) -> None:
    # The record itself is there; the server of its include never answers (dnsmasq forwards
    # silent.example to a socket that reads nothing): nothing is known, no failure claimed.
    report = check_domain("inc.test", settings(posture_dns.server, required_include=None))
    spf = by_name(report, "spf")
    assert spf.state is PostureState.DNS_ERROR, spf.message
    assert "following inc.test's SPF record" in spf.message
    assert "spf_lookups" not in states(report)
