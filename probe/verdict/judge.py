"""Judge a delivered probe against the target's expectations: latency, auth results, SCL, placement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.result import AUTH_METHODS, CHECKS, CheckResult, HeaderVerdict, Reason, Status

if TYPE_CHECKING:
    from probe.config import Expect, Thresholds


@dataclass(frozen=True)
class Finding:
    """One expectation that did not hold."""

    status: Status
    reason: Reason
    text: str

    @property
    def pair(self) -> tuple[Status, Reason]:
        return self.status, self.reason


@dataclass(frozen=True)
class Judgement:
    """The worst finding decides status and reason; the message lists every finding."""

    status: Status
    reason: Reason
    findings: tuple[Finding, ...]
    checks: tuple[CheckResult, ...] = ()  # every configured expectation, met or not

    @property
    def message(self) -> str:
        return "; ".join(f.text for f in self.findings)


def configured_checks(expect: Expect, thresholds: Thresholds) -> tuple[str, ...]:
    """The checks a delivered probe of this target is judged on (CHECKS order): a metric series
    exists for exactly these (docs/exporter.md, relayprobe_check_ok)."""
    wanted = {
        "latency": thresholds.warning is not None or thresholds.critical is not None,
        "placement": expect.placement != "any",
        "scl": expect.max_scl is not None,
        **{m: bool(getattr(expect, m)) for m in AUTH_METHODS},
    }
    return tuple(c for c in CHECKS if wanted[c])


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
    checks: list[CheckResult] = []

    def check(name: str, found: list[Finding], met: str) -> None:
        findings.extend(found)
        worst = max(found, key=lambda f: f.status.severity, default=None)
        if worst is None:
            checks.append(CheckResult(name, True, Status.OK, Reason.OK, met))
        else:
            text = "; ".join(f.text for f in found)
            checks.append(CheckResult(name, False, worst.status, worst.reason, text))

    configured = configured_checks(expect, thresholds)
    if "latency" in configured:
        check("latency", _latency(delivery_seconds, thresholds), f"{delivery_seconds:.2f} s")
    if "placement" in configured:
        check("placement", _placement(placement, folder, expect), f"{placement} ({folder})")
    wrong_auth = _auth(verdict, expect)
    findings += wrong_auth  # one finding for the message; one check per method below
    for method in AUTH_METHODS:
        wanted = getattr(expect, method)
        if method in configured:
            actual = getattr(verdict.auth, method)
            text = f"{method}={actual or 'missing'} (expected {'|'.join(wanted)})"
            ok = actual in wanted
            status, reason = (Status.OK, Reason.OK) if ok else wrong_auth[0].pair
            checks.append(CheckResult(method, ok, status, reason, text))
    scl = verdict.spam.scl
    if "scl" in configured:
        high = scl is not None and scl > expect.max_scl
        found = (
            [
                Finding(
                    Status.WARNING,
                    Reason.SPAM_SCORE_HIGH,
                    f"spam confidence level {scl} is above the allowed {expect.max_scl} "
                    f"(SFV {verdict.spam.sfv or '?'}, CAT {verdict.spam.cat or '?'})",
                )
            ]
            if high
            else []
        )
        check("scl", found, f"SCL {'-' if scl is None else scl} (at most {expect.max_scl})")
    if not findings:
        return Judgement(Status.OK, Reason.OK, (), tuple(checks))
    findings.sort(key=lambda f: -f.status.severity)
    worst = findings[0]
    return Judgement(worst.status, worst.reason, tuple(findings), tuple(checks))


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
