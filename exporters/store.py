"""ResultStore: the last probe result per target, a bounded history, and the metrics' counters."""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from probe import TRACE_STATUSES, ProbeResult, Stage, rfc3339

#: Delivery latency buckets (seconds): sub-second local relays up to Microsoft's 30-minute worst cases.
DELIVERY_BUCKETS: tuple[float, ...] = (
    0.25,
    0.5,
    1,
    2,
    5,
    10,
    20,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
)


#: Past runs kept per target (in memory only; the status page and /api/results show them).
HISTORY_LENGTH = 60
#: A history entry keeps at most this much of a run's message.
HISTORY_MESSAGE_CHARS = 240
#: Stages a run reaches only after the relay accepted the probe mail.
_AFTER_SUBMISSION = frozenset({Stage.DELIVER, Stage.VERIFY, Stage.CLEANUP, Stage.DONE})


def was_sent(result: ProbeResult) -> bool:
    """Whether the relay accepted the probe mail (an IMAP login failure comes before sending)."""
    return result.smtp is not None and result.stage in _AFTER_SUBMISSION


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One past run, small enough to keep ``HISTORY_LENGTH`` of them for every target."""

    finished_at: dt.datetime
    status: str  # probe.Status value
    success: bool
    stage: str
    reason: str
    sent: bool  # the relay accepted the probe mail
    placement: str  # inbox | junk | missing (``missing`` also when nothing was sent)
    delivery_seconds: float | None
    total_seconds: float | None
    failed_checks: tuple[str, ...]
    message: str  # cut to HISTORY_MESSAGE_CHARS
    probe_id: str | None

    @classmethod
    def of(cls, result: ProbeResult, finished_at: dt.datetime) -> HistoryEntry:
        message = result.message
        if len(message) > HISTORY_MESSAGE_CHARS:
            message = message[: HISTORY_MESSAGE_CHARS - 1] + "…"
        return cls(
            finished_at=finished_at,
            status=result.status.value,
            success=result.success,
            stage=result.stage.value,
            reason=result.reason.value,
            sent=was_sent(result),
            placement=result.arrival.placement,
            delivery_seconds=result.timings.delivery_seconds,
            total_seconds=result.timings.total_seconds,
            failed_checks=tuple(c.check for c in result.failed_checks),
            message=message,
            probe_id=result.probe_id,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "finished_at": rfc3339(self.finished_at),
            "status": self.status,
            "success": self.success,
            "stage": self.stage,
            "reason": self.reason,
            "sent": self.sent,
            "placement": self.placement,
            "delivery_seconds": self.delivery_seconds,
            "total_seconds": self.total_seconds,
            "failed_checks": list(self.failed_checks),
            "message": self.message,
            "probe_id": self.probe_id,
        }


def client_cert_not_after(path: Path) -> dt.datetime:
    """notAfter of the first certificate in the PEM file ``path`` (smtp.client_cert_file, whose
    first certificate is the one presented); OSError or ValueError when it cannot be read."""
    from cryptography import x509  # only for targets with a client certificate

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        return cert.not_valid_after_utc
    except AttributeError:  # cryptography < 42 (msal allows it): a naive UTC time
        return cert.not_valid_after.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class TargetSpec:
    """What the configuration says of a target that the metrics export (docs/exporter.md)."""

    name: str
    interval: float
    thresholds: tuple[tuple[str, float], ...] = ()  # ("warning", s), ("critical", s) if set
    checks: tuple[str, ...] = ()  # configured expectations (probe.configured_checks)
    mode: str = "submission"  # submission | direct_send | connector | hve | acs
    cloud: str = "global"
    # (side, method) per side: ("smtp", "password" | "oauth2" | "token" | "none"), ("imap", …).
    auth: tuple[tuple[str, str], ...] = ()
    client_cert: bool = False  # smtp.client_cert_file is set
    client_cert_not_after: dt.datetime | None = None  # read at load; None: unreadable


@dataclass
class TargetState:
    """Everything known about one configured target since the daemon started."""

    name: str
    interval: float
    thresholds: tuple[tuple[str, float], ...] = ()
    mode: str = "submission"
    cloud: str = "global"
    auth: tuple[tuple[str, str], ...] = ()  # (side, method), as TargetSpec.auth
    client_cert: bool = False
    client_cert_not_after: dt.datetime | None = None
    last: ProbeResult | None = None
    finished_at: dt.datetime | None = None
    last_success_at: dt.datetime | None = None
    runs: int = 0
    failed_runs: int = 0  # runs with success false: counted from 0, so ratios are exact
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason) -> n
    # Configured check -> delivered runs in which it failed; every configured one starts at 0.
    check_failures: dict[str, int] = field(default_factory=dict)
    # Message traces by status (probe.TRACE_STATUSES); every status at 0 for trace targets.
    traces: dict[str, int] = field(default_factory=dict)
    late: int = 0
    junk: int = 0
    cert_not_after: dt.datetime | None = None  # last one the relay showed; kept across failures
    imap_cert_not_after: dt.datetime | None = None  # the IMAP server's, at the last login; kept
    backoff_seconds: float = 0.0
    consecutive_config_failures: int = 0
    consecutive_rejections: int = 0  # smtp_rejected runs in a row (persistent 5xx)
    # Delivery histogram: per-bucket (non-cumulative) counts, the +Inf overflow, sum and count.
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(DELIVERY_BUCKETS) + 1))
    delivery_sum: float = 0.0
    delivery_count: int = 0
    # The last HISTORY_LENGTH runs, oldest first (the status page's strip, /api/results).
    history: deque[HistoryEntry] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    version: int = 0  # bumped on every change, so the exposition re-renders only changed targets

    @property
    def basic_auth_submission(self) -> bool:
        """Sends with SMTP AUTH and a password in mode submission, which Microsoft switches off
        (docs/runbook.md, "RelayProbeBasicAuthInUse"); modes hve and acs are not affected."""
        return self.mode == "submission" and ("smtp", "password") in self.auth

    def observe_delivery(self, seconds: float) -> None:
        self.bucket_counts[bisect.bisect_left(DELIVERY_BUCKETS, seconds)] += 1
        self.delivery_sum += seconds
        self.delivery_count += 1

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        out, total = [], 0
        for bound, count in zip((*DELIVERY_BUCKETS, float("inf")), self.bucket_counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", total))
        return out


class ResultStore:
    """Per-target state, read by the collector on every scrape and by /api/results.

    Only touched from the event loop (the mailbox watchers hand late arrivals over with
    call_soon_threadsafe), so it needs no lock.
    """

    def __init__(self) -> None:
        self._targets: dict[str, TargetState] = {}
        #: Called with every recorded result (``relayprobe demo`` prints them as they come).
        self.listeners: list[Callable[[ProbeResult], None]] = []

    def set_targets(self, targets: Iterable[TargetSpec | tuple[str, float]]) -> None:
        """Make the store hold exactly these targets; kept ones keep their state."""
        specs = [t if isinstance(t, TargetSpec) else TargetSpec(*t) for t in targets]
        wanted = {spec.name: spec for spec in specs}
        for name in list(self._targets):
            if name not in wanted:
                del self._targets[name]  # a removed target's series disappear with it
        for name, spec in wanted.items():
            state = self._targets.setdefault(name, TargetState(name, spec.interval))
            state.interval, state.thresholds = spec.interval, spec.thresholds
            state.mode, state.cloud, state.auth = spec.mode, spec.cloud, spec.auth
            state.client_cert = spec.client_cert
            state.client_cert_not_after = spec.client_cert_not_after
            # A check configured now starts at 0; one no longer configured loses its series.
            state.check_failures = {c: state.check_failures.get(c, 0) for c in spec.checks}
            state.version += 1

    def trace_targets(self, names: Iterable[str]) -> None:
        """Targets with message trace enabled: every trace status exists at 0 from now on (so
        increase() sees the first trace); counts so far are kept."""
        for name in names:
            state = self._targets.get(name)
            if state is not None:
                state.traces = {s: state.traces.get(s, 0) for s in (*TRACE_STATUSES, *state.traces)}
                state.version += 1

    def names(self) -> list[str]:
        return list(self._targets)

    def get(self, name: str) -> TargetState | None:
        return self._targets.get(name)

    def states(self) -> list[TargetState]:
        return list(self._targets.values())

    def record(self, result: ProbeResult, finished_at: dt.datetime | None = None) -> None:
        """Count one finished run; results of targets no longer configured are dropped."""
        state = self._targets.get(result.target)
        if state is None:
            return
        state.version += 1
        state.last = result
        state.finished_at = finished_at or dt.datetime.now(dt.UTC)
        state.runs += 1
        is_rejection = result.reason.value == "smtp_rejected"
        state.consecutive_rejections = state.consecutive_rejections + 1 if is_rejection else 0
        if result.success:
            state.last_success_at = state.finished_at
        else:
            state.failed_runs += 1
            state.failures[(result.stage.value, result.reason.value)] += 1
        for check in result.failed_checks:
            if check.check in state.check_failures:
                state.check_failures[check.check] += 1
        if result.smtp is not None and result.smtp.cert_not_after is not None:
            state.cert_not_after = result.smtp.cert_not_after
        if result.mailbox_cert_not_after is not None:
            state.imap_cert_not_after = result.mailbox_cert_not_after
        if result.arrival.placement == "junk":
            state.junk += 1
        if result.trace is not None:
            state.traces[result.trace.status] = state.traces.get(result.trace.status, 0) + 1
        if result.timings.delivery_seconds is not None:
            state.observe_delivery(result.timings.delivery_seconds)
        state.history.append(HistoryEntry.of(result, state.finished_at))
        for listener in self.listeners:
            listener(result)

    def record_late(self, name: str) -> bool:
        """Count a timed-out probe of ``name`` that arrived late; False for unknown names."""
        state = self._targets.get(name)
        if state is None:
            return False
        state.late += 1
        state.version += 1
        return True

    def set_backoff(self, name: str, seconds: float, consecutive: int) -> None:
        state = self._targets.get(name)
        if state is not None:
            state.backoff_seconds = seconds
            state.consecutive_config_failures = consecutive
            state.version += 1

    def results(
        self,
        *,
        next_run: Callable[[str], dt.datetime | None] | None = None,
        history: int = HISTORY_LENGTH,
        only: str | None = None,
    ) -> list[dict[str, object]]:
        """The /api/results document body (docs/exporter.md): each last result
        (ProbeResult.to_dict) plus finished_at, the schedule (``next_run`` asks the scheduler)
        and the newest ``history`` runs, oldest first; ``only`` keeps one target."""
        out: list[dict[str, object]] = []
        for state in self._targets.values():
            if state.last is None or (only is not None and state.name != only):
                continue
            past = list(state.history)[-history:] if history > 0 else []
            out.append(
                {
                    **state.last.to_dict(),
                    "finished_at": rfc3339(state.finished_at),
                    "next_run_at": rfc3339(next_run(state.name)) if next_run else None,
                    "interval_seconds": state.interval,
                    "backoff_seconds": state.backoff_seconds,
                    "backoff_failures": state.consecutive_config_failures,
                    "runs": state.runs,
                    "failed_runs": state.failed_runs,
                    "history": [entry.to_dict() for entry in past],
                }
            )
        return out
