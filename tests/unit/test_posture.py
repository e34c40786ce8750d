"""Posture without a DNS server: settings per mode, the sending IP from headers, explanations
that need no lookup, record change bookkeeping, metric labels, the status page section, CLI usage."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from exporters.metrics import RECORD_VALUE_MAX, posture_families, render
from exporters.posture import DomainPosture, plan
from exporters.statuspage.posture import posture_section
from probe.config import ConfigError, parse_config
from probe.config.fields import parse_dns_server
from probe.posture import PostureSettings, settings_for
from probe.posture.dkim import key_bits
from probe.posture.explain import explain, sending_ip
from probe.posture.model import Check, PostureReport, State
from probe.result import CheckResult, HeaderVerdict, Reason, Status
from probe.verdict.headers import parse_headers
from relayprobe.posture import EXIT, run_posture

T0 = dt.datetime(2026, 12, 8, 1, 0, tzinfo=dt.UTC)


def config(**target: object) -> object:
    base = {
        "name": "t",
        "smtp": {"host": "smtp.example.test", "port": 587},
        "mail_from": "app@contoso.test",
        "rcpt_to": "inbox@example.test",
        "mailbox": {
            "host": "imap.example.test",
            "auth": {"method": "password", "username": "u", "password": "x" * 12},
        },
    }
    data = {"tag_secret": "0123456789abcdef0123", "targets": [{**base, **target}]}
    return parse_config(data, base_dir=Path.cwd())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("[2001:db8::53]:53", ("2001:db8::53", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
    ],
)
def test_dns_server_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize("text", ["dns.example.test", "192.0.2.53:0", "192.0.2.53:99999", ""])
def test_bad_dns_server_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(posture={"dns_server": text})
    assert any(e.startswith("targets[0].posture.dns_server") for e in exc.value.errors), exc.value


def test_posture_defaults_and_key_by_key_merge() -> None:
    data = {
        "tag_secret": "0123456789abcdef0123",
        "defaults": {"posture": {"dns_server": "192.0.2.53", "interval": "30m"}},
        "targets": [
            {
                "name": "t",
                "smtp": {"host": "smtp.example.test", "port": 587},
                "mail_from": "app@contoso.test",
                "rcpt_to": "inbox@example.test",
                "mailbox": {
                    "host": "imap.example.test",
                    "auth": {"method": "password", "username": "u", "password": "x" * 12},
                },
                "posture": {"enabled": True},
            }
        ],
    }
    p = parse_config(data, base_dir=Path.cwd()).targets[0].posture
    assert (p.enabled, p.dns_server, p.interval, p.timeout) == (True, "192.0.2.53", 1800.0, 5.0)
    assert config().targets[0].posture.enabled is False  # off unless asked for


@pytest.mark.parametrize(
    ("mode", "cloud", "include"),
    [
        ("submission", "global", "spf.protection.outlook.com"),
        ("connector", "gcc", "spf.protection.outlook.com"),
        ("hve", "gcc_high", "spf.protection.office365.us"),
        ("acs", "china", "spf.protection.partner.outlook.cn"),
        ("direct_send", "global", None),
    ],
)
def test_microsofts_include_follows_mode_and_cloud(
    mode: str, cloud: str, include: str | None
) -> None:
    target = config(cloud=cloud).targets[0].model_copy(update={"mode": mode})
    assert settings_for(target).required_include == include


def test_selectors_follow_the_mode_unless_configured() -> None:
    target = config().targets[0]
    assert settings_for(target).dkim_selectors == ("selector1", "selector2")
    acs = target.model_copy(update={"mode": "acs"})
    assert settings_for(acs).dkim_selectors == (
        "selector1-azurecomm-prod-net",
        "selector2-azurecomm-prod-net",
    )
    own = config(posture={"dkim_selectors": ["s1"], "require_microsoft_include": False})
    s = settings_for(own.targets[0])
    assert (s.dkim_selectors, s.required_include) == (("s1",), None)


MS_HEADERS = (
    "Received: from EUR05-AM6-obe.outbound.protection.outlook.com (40.107.22.54) by "
    "AM4PEPF00027A5F.mail.protection.outlook.com (10.167.16.73) with Microsoft SMTP Server\r\n"
    "Authentication-Results: spf=fail (sender IP is 40.107.22.54) smtp.mailfrom=contoso.com;"
    " dkim=none (message not signed) header.d=none;dmarc=fail action=oreject"
    " header.from=contoso.com;compauth=fail reason=000\r\n"
    "From: app@contoso.com\r\n\r\n"
)
POLICYD_HEADERS = (
    "Authentication-Results: mx.probe.test; spf=fail (SPF fail - not authorized) "
    "smtp.mailfrom=spoof.test (client-ip=127.0.0.1; helo=[127.0.0.1]; envelope-from=a@spoof.test)\r\n"
    "Received: from [127.0.0.1] (localhost [127.0.0.1]) by mx.probe.test (Postfix)\r\n\r\n"
)


@pytest.mark.parametrize(
    ("headers", "ip"),
    [
        (MS_HEADERS, "40.107.22.54"),
        (POLICYD_HEADERS, "127.0.0.1"),
        (
            "Authentication-Results: mx.example; spf=fail smtp.remote-ip=2001:db8::25\r\n\r\n",
            "2001:db8::25",
        ),
        (
            "Received-SPF: Fail (protection.outlook.com: domain of contoso.com does not designate "
            "198.51.100.7 as permitted sender) receiver=protection.outlook.com; "
            "client-ip=198.51.100.7; helo=app.contoso.com;\r\n\r\n",
            "198.51.100.7",
        ),
        # No address in any verdict: the hop below the receiver's stamps.
        (
            "Authentication-Results: mx.example; spf=fail smtp.mailfrom=contoso.com\r\n"
            "Received: from app.contoso.com (app.contoso.com [203.0.113.5]) by mx.example\r\n\r\n",
            "203.0.113.5",
        ),
        (
            "Authentication-Results: mx.example; spf=fail (sender IP is ) smtp.mailfrom=x\r\n\r\n",
            None,
        ),
    ],
)
def test_sending_ip_from_the_receivers_headers(headers: str, ip: str | None) -> None:
    assert sending_ip(headers) == ip


def test_nothing_to_explain_asks_no_dns() -> None:
    ok = [CheckResult("spf", True, Status.OK, Reason.OK, "spf=pass (expected pass)")]
    verdict = parse_headers(MS_HEADERS)
    # A DNS server that cannot exist: any lookup would fail; none is made.
    out = explain(
        MS_HEADERS,
        ok,
        verdict,
        mail_from="app@contoso.com",
        settings=PostureSettings(dns_server="192.0.2.1:9"),
    )
    assert out.checks == tuple(ok) and out.causes == () and out.remedy is None
    failed = [CheckResult("spf", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "spf=fail")]
    unknown = explain("X: y\r\n\r\n", failed, HeaderVerdict(), mail_from="app@contoso.com")
    assert unknown.causes == ()  # no receiver verdict to explain


def _key(bits: int) -> str:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def test_dkim_key_size_from_the_record() -> None:
    assert key_bits({b"p": _key(1024).encode()}) == ("rsa", 1024)
    assert key_bits({b"k": b"rsa", b"p": b"not base64!"}) == ("rsa", None)


def _report(
    values: dict[str, str | None], when: dt.datetime, *, trouble: set[str] = frozenset()
) -> PostureReport:
    checks = tuple(
        Check(
            name,
            State.DNS_ERROR if name in trouble else State.OK,
            "m",
            record=name,
            value=None if name in trouble else v,
        )
        for name, v in values.items()
    )
    return PostureReport("contoso.test", "192.0.2.53", when, checks)


def test_first_sight_is_the_baseline_and_dns_trouble_is_no_change() -> None:
    d = DomainPosture("contoso.test", PostureSettings(), ("t",))
    assert d.observe(_report({"spf": "v=spf1 -all", "dmarc": "v=DMARC1; p=reject"}, T0)) == []
    assert d.records["spf"].changed_at is None
    later = T0 + dt.timedelta(hours=1)
    assert d.observe(_report({"spf": "v=spf1 -all", "dmarc": None}, later, trouble={"dmarc"})) == []
    assert d.records["dmarc"].value == "v=DMARC1; p=reject"
    again = later + dt.timedelta(hours=1)
    assert d.observe(_report({"spf": "v=spf1 ~all", "dmarc": "v=DMARC1; p=reject"}, again)) == [
        "spf"
    ]
    assert (d.records["spf"].previous, d.records["spf"].changed_at) == ("v=spf1 -all", again)


def test_record_value_labels_are_cut_but_still_tell_values_apart() -> None:
    d = DomainPosture("contoso.test", PostureSettings(), ("t",))
    long_a, long_b = "v=DKIM1; p=" + "A" * 400, "v=DKIM1; p=" + "A" * 399 + "B"
    d.observe(_report({"dkim:selector1": long_a, "mx": None}, T0))
    text = render(posture_families([d])).decode()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("relayprobe_dns_record_info{") and "dkim" in ln
    )
    value = line.split('value="', 1)[1].split('"', 1)[0]
    assert len(value) == RECORD_VALUE_MAX and value.endswith("...")
    d2 = DomainPosture("contoso.test", PostureSettings(), ("t",))
    d2.observe(_report({"dkim:selector1": long_b}, T0))
    other = render(posture_families([d2])).decode()
    sha = [
        ln.split('sha256="', 1)[1][:16]
        for ln in (text + other).splitlines()
        if 'record="dkim:selector1"' in ln and "_info{" in ln
    ]
    assert len(set(sha)) == 2
    assert (
        'relayprobe_dns_record_info{domain="contoso.test",record="mx",value="",sha256=""} 1' in text
    )
    assert 'relayprobe_posture_ok{domain="contoso.test",check="dkim:selector1"} 1' in text


def test_families_are_declared_without_any_domain() -> None:
    text = render(posture_families([])).decode()
    for name in (
        "relayprobe_dns_record_info",
        "relayprobe_posture_ok",
        "relayprobe_posture_dns_errors",
    ):
        assert f"# TYPE {name} gauge" in text


def test_plan_one_schedule_per_domain_with_the_first_targets_settings() -> None:
    base = {
        "smtp": {"host": "smtp.example.test", "port": 587},
        "rcpt_to": "inbox@example.test",
        "mailbox": {
            "host": "imap.example.test",
            "auth": {"method": "password", "username": "u", "password": "x" * 12},
        },
    }
    data = {
        "tag_secret": "0123456789abcdef0123",
        "targets": [
            {
                **base,
                "name": "a",
                "mail_from": "a@contoso.test",
                "posture": {"enabled": True, "interval": "10m"},
            },
            {**base, "name": "b", "mail_from": "b@Contoso.test", "posture": {"enabled": True}},
            {**base, "name": "c", "mail_from": "c@fabrikam.test"},
        ],
    }
    got = plan(parse_config(data, base_dir=Path.cwd()))
    assert list(got) == ["contoso.test"]
    settings, targets = got["contoso.test"]
    assert targets == ("a", "b") and settings.interval == 600


def test_status_page_section_escapes_values() -> None:
    d = DomainPosture("contoso.test", PostureSettings(), ("t<x>",))
    report = PostureReport(
        "contoso.test",
        "192.0.2.53",
        T0,
        (
            Check(
                "spf",
                State.CRITICAL,
                "<script>alert(1)</script>",
                "fix <b>it</b>",
                record="spf",
                value="x",
            ),
        ),
    )
    d.observe(report)
    html = posture_section([d], T0)
    assert "<script>" not in html and "&lt;script&gt;" in html and "t&lt;x&gt;" in html
    assert "CRITICAL" in html and posture_section([], T0) == ""


def test_exit_codes_order_critical_over_dns_trouble() -> None:
    assert [EXIT[s] for s in (State.OK, State.WARNING, State.CRITICAL, State.DNS_ERROR)] == [
        0,
        1,
        2,
        3,
    ]
    assert max([State.DNS_ERROR, State.CRITICAL], key=lambda s: s.severity) is State.CRITICAL
    assert max([State.DNS_ERROR, State.WARNING], key=lambda s: s.severity) is State.DNS_ERROR


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"domains": ["contoso.test"], "ip": "not-an-ip"},
            "--ip: 'not-an-ip' is not an IP address",
        ),
        ({"domains": ["contoso.test"], "dns_server": "dns.example"}, "not an IP address"),
        ({"domains": []}, "name a DOMAIN or --config FILE"),
        ({"domains": ["contoso.test"], "ca_file": "/nonexistent/ca.pem"}, "no such file"),
        ({"domains": ["contoso.test"], "timeout": 0.0}, "--timeout must be above 0"),
    ],
)
def test_cli_usage_errors_exit_3_before_any_lookup(args: dict, message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    domains = args.pop("domains")
    assert run_posture(domains, out=out, err=err, **args) == 3
    assert message in err.getvalue() and out.getvalue() == ""


async def test_explanations_can_be_switched_off() -> None:
    from probe.posture.explain import explain_failed_auth

    target = config(posture={"explain": False, "dns_server": "192.0.2.1:9"}).targets[0]
    failed = [CheckResult("spf", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "spf=fail")]
    out = await explain_failed_auth(MS_HEADERS, failed, parse_headers(MS_HEADERS), target)
    assert out.checks == tuple(failed) and out.causes == ()


def test_cli_selectors_follow_the_mode() -> None:
    from relayprobe.posture import _from_options

    common = {
        "dns_server": None,
        "cloud": "global",
        "tenant": None,
        "ca_file": None,
        "timeout": 5.0,
    }
    acs = _from_options(selectors=["s1"], mode="acs", **common)
    assert acs.dkim_selectors == (
        "selector1-azurecomm-prod-net",
        "selector2-azurecomm-prod-net",
        "s1",
    )
    direct = _from_options(selectors=["selector1"], mode="direct_send", **common)
    assert (direct.dkim_selectors, direct.required_include) == (("selector1", "selector2"), None)
