"""The plugin's long output gives every failed check of a result its own state, not just the primary."""

from __future__ import annotations

from nagios.contexts import Observation
from nagios.options import parse_options
from nagios.output import render
from probe.result import (
    Arrival,
    AuthVerdict,
    CheckResult,
    HeaderVerdict,
    ProbeResult,
    Reason,
    SpamVerdict,
    Status,
)
from tests.results import m365_delivered

CONFIG_ARGS = ["--config", "relayprobe.yaml", "--target", "m365-submission"]


def junked_and_spoofed() -> ProbeResult:
    """Junked (the primary reason) and failing SPF and DMARC, as a direct send spoof lands."""
    checks = [
        CheckResult("latency", True, Status.OK, Reason.OK, "12.40 s"),
        CheckResult("placement", False, Status.CRITICAL, Reason.JUNKED, "junked"),
        CheckResult("spf", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "spf=fail"),
        CheckResult("dmarc", False, Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH, "dmarc=fail"),
        CheckResult("scl", True, Status.OK, Reason.OK, "SCL 1"),
    ]
    return m365_delivered(
        status=Status.CRITICAL,
        reason=Reason.JUNKED,
        message='the probe landed in the junk folder "Junk Email"',
        arrival=Arrival("Junk Email", "junk"),
        verdict=HeaderVerdict(
            AuthVerdict("fail", "none", "fail", "reject", "fail", "000", "Authentication-Results"),
            SpamVerdict(scl=1),
        ),
        checks=checks,
    )


def lines(result: ProbeResult, *args: str) -> tuple[list[str], int]:
    rendered = render(Observation(result), parse_options([*CONFIG_ARGS, *args]))
    return rendered.text.splitlines(), rendered.exit_code


def test_a_junked_probe_failing_spf_and_dmarc_says_so_on_the_auth_line() -> None:
    text, code = lines(junked_and_spoofed())
    assert code == 2
    assert "\\_[CRITICAL] authentication: spf=fail dkim=none dmarc=fail compauth=fail" in text
    assert any(line.startswith("\\_[CRITICAL] delivery: Junk Email (junk)") for line in text)
    assert "\\_[OK] spam: SCL 1" in text


def test_a_plugin_option_decides_its_aspect() -> None:
    # --expect-spf fail: the plugin's own expectation wins over the daemon's config for auth.
    text, _ = lines(junked_and_spoofed(), "--expect-spf", "fail", "--expect-dmarc", "fail")
    assert "\\_[OK] authentication: spf=fail dkim=none dmarc=fail compauth=fail" in text


def test_checks_survive_the_json_round_trip() -> None:
    result = junked_and_spoofed()
    again = ProbeResult.from_dict(result.to_dict())
    assert again.checks == result.checks
    assert [c.check for c in again.failed_checks] == ["placement", "spf", "dmarc"]
