"""A probe whose SPF, DKIM and DMARC fail says why, from DNS: the sending IP the receiver saw and
the record that does not authorise it (the mail testbed and its DNS on 127.0.0.153)."""

from __future__ import annotations

import pytest

from probe.result import Status
from probe.roundtrip import run_probe
from tests.system.probe_configs import make_config, target_dict

pytestmark = pytest.mark.testbed

TESTBED_DNS = "127.0.0.153"


def spoofed_direct_send(tb, **posture: object) -> dict:
    """Direct send into the MX from someone@spoof.test: spoof.test's SPF is "v=spf1 -all"."""
    target = target_dict(
        tb,
        name="spoofed",
        mode="direct_send",
        smtp={"port": tb.mx_port, "security": "starttls", "auth": None},
        mail_from="someone@spoof.test",
        rcpt_to="inbox+posture@probe.test",
        expect={"spf": "pass", "dkim": "pass", "dmarc": "pass", "placement": "any"},
        posture={"dns_server": TESTBED_DNS, **posture},
    )
    target["smtp"].pop("auth")
    return target


async def test_spf_failure_names_the_sending_ip_and_the_record(testbed) -> None:
    config = make_config(testbed, spoofed_direct_send(testbed))
    result = await run_probe(config, config.targets[0])
    assert result.status is Status.CRITICAL, result.message
    assert result.verdict.auth.spf == "fail"
    cause = "SPF failed: 127.0.0.1 is not authorised by spoof.test's SPF record (v=spf1 -all)"
    assert cause in result.message
    checks = {c.check: c for c in result.checks}
    assert checks["spf"].message.endswith(cause)
    assert "add 127.0.0.1 (ip4:/ip6:)" in result.remedy
    # DKIM: not signed, and no Microsoft 365 selector published for spoof.test.
    assert "DKIM: the message was not signed" in checks["dkim"].message
    assert (
        "no selector of selector1, selector2 is published for spoof.test" in checks["dkim"].message
    )
    # DMARC: the policy and why nothing aligned.
    assert (
        "DMARC: _dmarc.spoof.test says p=reject; SPF fail for spoof.test" in checks["dmarc"].message
    )
    assert result.to_dict()["remedy"] == result.remedy


async def test_dns_trouble_during_the_explanation_keeps_the_result(testbed, silent_dns) -> None:
    config = make_config(testbed, spoofed_direct_send(testbed, dns_server=silent_dns, timeout=1))
    result = await run_probe(config, config.targets[0])
    # Still the probe's own verdict (delivered, SPF failed), never an error of the explanation.
    assert result.status is Status.CRITICAL and result.verdict.auth.spf == "fail"
    checks = {c.check: c for c in result.checks}
    assert "could not look up the DNS cause" in checks["spf"].message
    assert "no answer (timeout)" in checks["spf"].message
