"""Judging a delivered probe: latency thresholds, auth expectations, SCL and placement."""

from probe.config import Expect, Thresholds
from probe.result import AuthVerdict, HeaderVerdict, Reason, SpamVerdict, Status
from probe.verdict.judge import judge


def _verdict(spf="pass", dkim="pass", dmarc="pass", scl=None):
    return HeaderVerdict(
        auth=AuthVerdict(spf=spf, dkim=dkim, dmarc=dmarc, source="Authentication-Results"),
        spam=SpamVerdict(scl=scl),
    )


def _judge(seconds=1.0, placement="inbox", verdict=None, expect=None, thresholds=None):
    return judge(
        delivery_seconds=seconds,
        placement=placement,
        folder="INBOX" if placement == "inbox" else "Junk Email",
        verdict=verdict or _verdict(),
        expect=expect or Expect(spf=["pass"], dkim=["pass"], dmarc=["pass"]),
        thresholds=thresholds or Thresholds(warning=10, critical=20),
    )


def test_all_good_is_ok():
    j = _judge()
    assert (j.status, j.reason, j.findings) == (Status.OK, Reason.OK, ())


def test_latency_thresholds():
    assert _judge(seconds=15).reason is Reason.LATENCY_WARNING
    assert _judge(seconds=15).status is Status.WARNING
    assert _judge(seconds=25).reason is Reason.LATENCY_CRITICAL
    assert _judge(seconds=25).status is Status.CRITICAL
    assert "25.00 s" in _judge(seconds=25).message


def test_auth_mismatch_names_each_method():
    j = _judge(verdict=_verdict(dkim="fail", dmarc=None))
    assert (j.status, j.reason) == (Status.CRITICAL, Reason.AUTH_RESULT_MISMATCH)
    assert "dkim=fail (expected pass)" in j.message
    assert "dmarc=missing (expected pass)" in j.message


def test_unchecked_methods_are_ignored():
    j = _judge(verdict=_verdict(dkim="none"), expect=Expect(spf=["pass"]))
    assert j.status is Status.OK


def test_junk_severity_and_worst_first():
    warn = _judge(placement="junk", expect=Expect(junk_severity="warning"))
    assert (warn.status, warn.reason) == (Status.WARNING, Reason.JUNKED)
    crit = _judge(placement="junk", seconds=15, expect=Expect())
    assert (crit.status, crit.reason) == (Status.CRITICAL, Reason.JUNKED)
    assert crit.message.startswith("the probe landed in the junk folder")
    assert "warning threshold" in crit.message


def test_scl_above_max_is_a_warning():
    j = _judge(verdict=_verdict(scl=6), expect=Expect(max_scl=4))
    assert (j.status, j.reason) == (Status.WARNING, Reason.SPAM_SCORE_HIGH)
    assert _judge(verdict=_verdict(scl=None), expect=Expect(max_scl=4)).status is Status.OK


def test_every_configured_expectation_is_a_check_and_every_failure_is_kept():
    # Junked and failing SPF and DMARC: the primary reason is one, the checks say all three.
    j = _judge(
        placement="junk",
        verdict=_verdict(spf="fail", dkim="none", dmarc="fail", scl=6),
        expect=Expect(spf=["pass"], dmarc=["pass"], placement="inbox", max_scl=5),
    )
    by_name = {c.check: c for c in j.checks}
    assert list(by_name) == ["latency", "placement", "spf", "dmarc", "scl"]  # dkim not expected
    assert [c.check for c in j.checks if not c.ok] == ["placement", "spf", "dmarc", "scl"]
    assert (by_name["placement"].status, by_name["placement"].reason) == (
        Status.CRITICAL,
        Reason.JUNKED,
    )
    assert by_name["spf"].reason is Reason.AUTH_RESULT_MISMATCH
    assert by_name["spf"].message == "spf=fail (expected pass)"
    assert (by_name["scl"].status, by_name["scl"].reason) == (
        Status.WARNING,
        Reason.SPAM_SCORE_HIGH,
    )
    assert by_name["latency"].ok and by_name["latency"].status is Status.OK
    assert j.status is Status.CRITICAL


def test_placement_any_and_no_thresholds_are_not_checks():
    j = _judge(expect=Expect(placement="any"), thresholds=Thresholds())
    assert j.checks == () and j.status is Status.OK
