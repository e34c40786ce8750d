"""Judge a delivered probe against the target's expectations: latency, auth results, SCL, placement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.result import AUTH_METHODS, HeaderVerdict, Reason, Status

if TYPE_CHECKING:
    from probe.config import Expect, Thresholds


@dataclass(frozen=True)
class Finding:
    """One expectation that did not hold."""

    status: Status
    reason: Reason
    text: str


@dataclass(frozen=True)
class Judgement:
    """The worst finding decides status and reason; the message lists every finding."""

    status: Status
    reason: Reason
    findings: tuple[Finding, ...]

    @property
    def message(self) -> str:
        return "; ".join(f.text for f in self.findings)


def judge(
    *,
    delivery_seconds: float,
    placement: str,
    folder: str,
    verdict: HeaderVerdict,
    expect: Expect,
    thresholds: Thresholds,
) -> Judgement:
    """Evaluate a delivered probe; critical findings come before warnings in the message."""
    findings: list[Finding] = []
    findings += _latency(delivery_seconds, thresholds)
    findings += _placement(placement, folder, expect)
    findings += _auth(verdict, expect)
    scl = verdict.spam.scl
    if expect.max_scl is not None and scl is not None and scl > expect.max_scl:
        findings.append(
            Finding(
                Status.WARNING,
                Reason.SPAM_SCORE_HIGH,
                f"spam confidence level {scl} is above the allowed {expect.max_scl} "
                f"(SFV {verdict.spam.sfv or '?'}, CAT {verdict.spam.cat or '?'})",
            )
        )
    if not findings:
        return Judgement(Status.OK, Reason.OK, ())
    findings.sort(key=lambda f: -f.status.severity)
    worst = findings[0]
    return Judgement(worst.status, worst.reason, tuple(findings))


def _latency(seconds: float, thresholds: Thresholds) -> list[Finding]:
    if thresholds.critical is not None and seconds > thresholds.critical:
        return [
            Finding(
                Status.CRITICAL,
                Reason.LATENCY_CRITICAL,
                f"delivery took {seconds:.2f} s, over the critical threshold of {thresholds.critical:g} s",
            )
        ]
    if thresholds.warning is not None and seconds > thresholds.warning:
        return [
            Finding(
                Status.WARNING,
                Reason.LATENCY_WARNING,
                f"delivery took {seconds:.2f} s, over the warning threshold of {thresholds.warning:g} s",
            )
        ]
    return []


def _placement(placement: str, folder: str, expect: Expect) -> list[Finding]:
    if expect.placement == "any" or placement == expect.placement:
        return []
    if placement == "junk":
        status = Status.CRITICAL if expect.junk_severity == "critical" else Status.WARNING
        return [Finding(status, Reason.JUNKED, f'the probe landed in the junk folder "{folder}"')]
    return [
        Finding(
            Status.CRITICAL,
            Reason.PLACEMENT_MISMATCH,
            f'the probe landed in "{folder}", expected placement {expect.placement}',
        )
    ]


def _auth(verdict: HeaderVerdict, expect: Expect) -> list[Finding]:
    auth = verdict.auth
    wrong = []
    for method in AUTH_METHODS:
        wanted = getattr(expect, method)
        if not wanted:
            continue
        actual = getattr(auth, method)
        if actual not in wanted:
            wrong.append(f"{method}={actual or 'missing'} (expected {'|'.join(wanted)})")
    if not wrong:
        return []
    source = auth.source or "no Authentication-Results header"
    return [
        Finding(
            Status.CRITICAL,
            Reason.AUTH_RESULT_MISMATCH,
            f"receiver's authentication verdict {', '.join(wrong)} [{source}]",
        )
    ]
