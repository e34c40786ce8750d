"""Typed probe results: status, stage, reason and the measured parts; the JSON contract of docs/architecture.md."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """Overall outcome, ordered like Nagios exit codes (see ``exit_code``)."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}[self.value]

    @property
    def severity(self) -> int:
        """Rank for "worst wins": ok < warning < unknown < critical (not the exit-code order)."""
        return {"ok": 0, "warning": 1, "unknown": 2, "critical": 3}[self.value]


class Stage(StrEnum):
    """Where in the round trip a probe ended (``done`` when it went all the way)."""

    CONFIG = "config"
    CONNECT = "connect"
    TLS = "tls"
    AUTH = "auth"
    SUBMIT = "submit"
    DELIVER = "deliver"
    VERIFY = "verify"
    CLEANUP = "cleanup"
    DONE = "done"


class Reason(StrEnum):
    """The fixed, documented list of reasons shared by metrics labels, Nagios text and JSON."""

    OK = "ok"
    CONFIG_ERROR = "config_error"
    DNS_ERROR = "dns_error"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_TIMEOUT = "connect_timeout"
    CONNECT_FAILED = "connect_failed"
    TLS_FAILED = "tls_failed"
    STARTTLS_UNAVAILABLE = "starttls_unavailable"
    AUTH_UNAVAILABLE = "auth_unavailable"
    AUTH_FAILED = "auth_failed"
    AUTH_BASIC_DISABLED = "auth_basic_disabled"
    OAUTH_TOKEN_FAILED = "oauth_token_failed"
    OAUTH_UNAVAILABLE = "oauth_unavailable"
    SEND_AS_DENIED = "send_as_denied"
    THROTTLED = "throttled"
    SMTP_TEMPORARY_FAILURE = "smtp_temporary_failure"
    SMTP_REJECTED = "smtp_rejected"
    SMTP_TIMEOUT = "smtp_timeout"
    SMTP_PROTOCOL_ERROR = "smtp_protocol_error"
    IMAP_FAILED = "imap_failed"
    IMAP_AUTH_FAILED = "imap_auth_failed"
    FOLDER_MISSING = "folder_missing"
    DELIVERY_TIMEOUT = "delivery_timeout"
    JUNKED = "junked"
    PLACEMENT_MISMATCH = "placement_mismatch"
    AUTH_RESULT_MISMATCH = "auth_result_mismatch"
    SPAM_SCORE_HIGH = "spam_score_high"
    LATENCY_WARNING = "latency_warning"
    LATENCY_CRITICAL = "latency_critical"
    CLEANUP_FAILED = "cleanup_failed"
    INTERNAL_ERROR = "internal_error"
    # mailbox.protocol graph and message trace (probe/graph/, docs/architecture.md "Reasons")
    GRAPH_FAILED = "graph_failed"
    GRAPH_ACCESS_DENIED = "graph_access_denied"
    GRAPH_THROTTLED = "graph_throttled"
    QUARANTINED = "quarantined"


#: Reasons that mean "fix the configuration or the tenant", not "the relay is down":
#: the scheduler backs off exponentially after these instead of hammering Microsoft.
CONFIGURATION_REASONS = frozenset(
    {
        Reason.CONFIG_ERROR,
        Reason.AUTH_FAILED,
        Reason.AUTH_BASIC_DISABLED,
        Reason.OAUTH_TOKEN_FAILED,
        Reason.SEND_AS_DENIED,
        Reason.THROTTLED,
        Reason.IMAP_AUTH_FAILED,
        Reason.FOLDER_MISSING,
        Reason.GRAPH_ACCESS_DENIED,
    }
)


#: The SMTP phases of a submission, in order: Timings fields, metric and perfdata labels, text.
SMTP_PHASES = ("connect", "tls", "auth", "submit")
#: The receiver verdicts relayprobe reads, expects and exports, in display order.
AUTH_METHODS = ("spf", "dkim", "dmarc", "compauth")
#: The expectations a delivered probe is judged on, one check each (metric label ``check``).
CHECKS = ("latency", "placement", *AUTH_METHODS, "scl")


def rfc3339(when: dt.datetime | None) -> str | None:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z`` suffix."""
    if when is None:
        return None
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str | None) -> dt.datetime | None:
    """Read an ``rfc3339`` time back; ValueError says why ``text`` is not an aware RFC 3339 time."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"'{text}' is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ValueError(f"'{text}' has no time zone")
    return when


class ResultError(ValueError):
    """A result dict ``from_dict`` cannot read; ``field`` is the dotted path, e.g. ``smtp.port``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


_KINDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "an object",
}


def _get(data: dict[str, Any], path: str, kind: type, *, required: bool = False) -> Any:
    """``data``'s value for the last key of ``path`` as ``kind`` (None if null or absent)."""
    value = data.get(path.rpartition(".")[2])
    if value is None:
        if required:
            raise ResultError(path, "is missing")
        return None
    if kind is dt.datetime:
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            raise ResultError(path, str(exc)) from None
    if issubclass(kind, StrEnum):
        try:
            return kind(value)
        except ValueError:
            raise ResultError(path, f"{value!r} is unknown") from None
    number = kind is float and isinstance(value, int)
    if isinstance(value, bool) is not (kind is bool) or not (isinstance(value, kind) or number):
        raise ResultError(path, f"{value!r} is not {_KINDS[kind]}")
    return float(value) if kind is float else value


@dataclass
class Timings:
    """Per-phase durations in seconds; ``None`` where the phase did not run."""

    smtp_connect_seconds: float | None = None
    smtp_tls_seconds: float | None = None
    smtp_auth_seconds: float | None = None
    smtp_submit_seconds: float | None = None
    delivery_seconds: float | None = None
    total_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timings:
        """Read ``dataclasses.asdict`` of it back; keys this version does not know are ignored."""
        return cls(
            **{f.name: _get(data, f"timings.{f.name}", float) for f in dataclasses.fields(cls)}
        )

    @classmethod
    def of_smtp(cls, phases: dict[str, float]) -> Timings:
        """Timings of the SMTP phases that ran (keyed as SMTP_PHASES; the rest stay None)."""
        return cls(**{f"smtp_{phase}_seconds": phases.get(phase) for phase in SMTP_PHASES})

    def smtp_phases(self) -> list[tuple[str, float | None]]:
        """(phase, seconds) for each of SMTP_PHASES, in order; None where it did not run."""
        return [(phase, getattr(self, f"smtp_{phase}_seconds")) for phase in SMTP_PHASES]


@dataclass
class SmtpReceipt:
    """What the relay said and how the connection was secured."""

    host: str
    port: int
    tls_version: str | None = None
    cipher: str | None = None
    cert_not_after: dt.datetime | None = None
    reply_code: int | None = None
    reply: str | None = None
    queue_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "cert_not_after": rfc3339(self.cert_not_after),
            "reply_code": self.reply_code,
            "reply": self.reply,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmtpReceipt:
        """The inverse of ``to_dict`` (``queue_id`` stays None); ResultError names a bad field."""
        return cls(
            host=_get(data, "smtp.host", str, required=True),
            port=_get(data, "smtp.port", int, required=True),
            tls_version=_get(data, "smtp.tls_version", str),
            cipher=_get(data, "smtp.cipher", str),
            cert_not_after=_get(data, "smtp.cert_not_after", dt.datetime),
            reply_code=_get(data, "smtp.reply_code", int),
            reply=_get(data, "smtp.reply", str),
        )


@dataclass
class Arrival:
    """Where the probe mail landed; ``placement`` is ``missing`` when it never arrived."""

    folder: str | None = None
    placement: str = "missing"  # inbox | junk | missing
    late: bool = False
    late_count: int = 0  # earlier timed-out probes that arrived late and were cleaned this run

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "placement": self.placement, "late": self.late}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arrival:
        """The inverse of ``to_dict`` (``late_count`` stays 0); null or absent means the default."""
        values = {
            "folder": _get(data, "arrival.folder", str),
            "placement": _get(data, "arrival.placement", str),
            "late": _get(data, "arrival.late", bool),
        }
        return cls(**{key: value for key, value in values.items() if value is not None})


@dataclass
class AuthVerdict:
    """The receiver's authentication verdict; ``None`` means the header did not say."""

    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    dmarc_action: str | None = None
    compauth: str | None = None
    compauth_reason: str | None = None
    source: str | None = None  # name of the header the verdict was read from
    dkim_all: list[str] = field(default_factory=list)  # every dkim= result, in order

    def to_dict(self) -> dict[str, Any]:
        return {
            "spf": self.spf,
            "dkim": self.dkim,
            "dmarc": self.dmarc,
            "dmarc_action": self.dmarc_action,
            "compauth": self.compauth,
            "compauth_reason": self.compauth_reason,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthVerdict:
        """The inverse of ``to_dict``, whose keys (all strings) it reads; ``dkim_all`` stays []."""
        return cls(**{key: _get(data, f"auth.{key}", str) for key in cls().to_dict()})


@dataclass
class SpamVerdict:
    """Microsoft's spam stamps; all ``None`` for receivers that do not write them."""

    scl: int | None = None
    bcl: int | None = None
    sfv: str | None = None
    cat: str | None = None
    dest: str | None = None  # X-Microsoft-Antispam-Mailbox-Delivery dest: I / J / C

    def to_dict(self) -> dict[str, Any]:
        return {"scl": self.scl, "bcl": self.bcl, "sfv": self.sfv, "cat": self.cat}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpamVerdict:
        """The inverse of ``to_dict`` (``dest`` stays None); ResultError names a bad field."""
        return cls(
            scl=_get(data, "spam.scl", int),
            bcl=_get(data, "spam.bcl", int),
            sfv=_get(data, "spam.sfv", str),
            cat=_get(data, "spam.cat", str),
        )


@dataclass
class Hop:
    """One ``Received`` hop: who handed over to whom, when, and the seconds since the hop below."""

    by: str | None
    from_: str | None
    at: dt.datetime | None
    delay_seconds: float | None = None


@dataclass
class HeaderVerdict:
    """Everything read from a received header block."""

    auth: AuthVerdict = field(default_factory=AuthVerdict)
    spam: SpamVerdict = field(default_factory=SpamVerdict)
    hops: list[Hop] = field(default_factory=list)
    arrived_at: dt.datetime | None = None  # receiving server's own arrival stamp, if any

    def to_dict(self) -> dict[str, Any]:
        return {"auth": self.auth.to_dict(), "spam": self.spam.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeaderVerdict:
        """The inverse of ``to_dict`` or a ProbeResult's; ``hops`` and ``arrived_at`` stay unset."""
        return cls(
            auth=AuthVerdict.from_dict(_get(data, "auth", dict) or {}),
            spam=SpamVerdict.from_dict(_get(data, "spam", dict) or {}),
        )


@dataclass
class CheckResult:
    """One configured expectation judged on a delivered probe: met or not, and how bad."""

    check: str  # one of CHECKS
    ok: bool
    status: Status  # Status.OK when met
    reason: Reason  # Reason.OK when met
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "ok": self.ok,
            "status": self.status.value,
            "reason": self.reason.value,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        """The inverse of ``to_dict``; a missing or malformed field raises ResultError naming it."""
        if not isinstance(data, dict):
            raise ResultError("checks[]", f"{data!r} is not {_KINDS[dict]}")
        return cls(
            check=_get(data, "checks[].check", str, required=True),
            ok=_get(data, "checks[].ok", bool, required=True),
            status=_get(data, "checks[].status", Status, required=True),
            reason=_get(data, "checks[].reason", Reason, required=True),
            message=_get(data, "checks[].message", str) or "",
        )


#: Microsoft's message trace statuses (exchangeMessageTrace.status, docs/m365.md#message-trace)
#: and relayprobe's own outcomes of a trace query: the label values of relayprobe_trace_total.
TRACE_STATUSES = (
    "delivered",
    "pending",
    "failed",
    "quarantined",
    "filteredAsSpam",
    "expanded",
    "gettingStatus",
    "not_found",  # no trace record (yet: Microsoft's trace data can lag by minutes)
    "rate_limited",  # skipped: this process's trace budget was spent
    "error",  # the query failed (the message says why)
)


@dataclass
class TraceEvent:
    """One event of a message trace's details (exchangeMessageTraceDetail)."""

    at: dt.datetime | None
    event: str
    action: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": rfc3339(self.at),
            "event": self.event,
            "action": self.action,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceEvent:
        if not isinstance(data, dict):
            raise ResultError("trace.events[]", f"{data!r} is not {_KINDS[dict]}")
        return cls(
            at=_get(data, "trace.events[].at", dt.datetime),
            event=_get(data, "trace.events[].event", str) or "",
            action=_get(data, "trace.events[].action", str),
            description=_get(data, "trace.events[].description", str),
        )


@dataclass
class Trace:
    """Microsoft's message trace of a probe that timed out, was junked or came late."""

    status: str  # one of TRACE_STATUSES
    queried_at: dt.datetime
    message: str  # one line: what the trace says, or why there is none
    trace_id: str | None = None  # exchangeMessageTrace.id
    events: list[TraceEvent] = field(default_factory=list)
    detail: str | None = None  # the telling detail: spam verdict, quarantine, NDR code

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "queried_at": rfc3339(self.queried_at),
            "message": self.message,
            "trace_id": self.trace_id,
            "events": [e.to_dict() for e in self.events],
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        events = data.get("events") or []
        if not isinstance(events, list):
            raise ResultError("trace.events", f"{events!r} is not a list")
        return cls(
            status=_get(data, "trace.status", str, required=True),
            queried_at=_get(data, "trace.queried_at", dt.datetime, required=True),
            message=_get(data, "trace.message", str) or "",
            trace_id=_get(data, "trace.trace_id", str),
            events=[TraceEvent.from_dict(e) for e in events],
            detail=_get(data, "trace.detail", str),
        )


@dataclass
class ProbeResult:
    """One probe run of one target: the contract behind ``once --json``, /api/results and Nagios."""

    target: str
    status: Status
    stage: Stage
    reason: Reason
    message: str
    started_at: dt.datetime
    remedy: str | None = None
    timings: Timings = field(default_factory=Timings)
    smtp: SmtpReceipt | None = None
    arrival: Arrival = field(default_factory=Arrival)
    verdict: HeaderVerdict = field(default_factory=HeaderVerdict)
    probe_id: str | None = None
    # Every configured expectation of a delivered probe, met or not (empty when none arrived):
    # the primary ``reason`` is the worst of them, these are all of them (docs/architecture.md).
    checks: list[CheckResult] = field(default_factory=list)
    # notAfter of the IMAP server's certificate at the mailbox login (None: not seen, no TLS).
    mailbox_cert_not_after: dt.datetime | None = None
    # Microsoft's message trace of this probe, when trace is enabled and the probe timed out,
    # was junked or came late (probe/graph/trace.py); None otherwise.
    trace: Trace | None = None

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    @property
    def success(self) -> bool:
        """True when the mail went all the way and every expectation held (warnings included)."""
        return self.stage is Stage.DONE and self.status in (Status.OK, Status.WARNING)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status.value,
            "success": self.success,
            "stage": self.stage.value,
            "reason": self.reason.value,
            "message": self.message,
            "remedy": self.remedy,
            "probe_id": self.probe_id,
            "started_at": rfc3339(self.started_at),
            "timings": dataclasses.asdict(self.timings),
            "smtp": self.smtp.to_dict() if self.smtp else None,
            "arrival": self.arrival.to_dict(),
            "auth": self.verdict.auth.to_dict(),
            "spam": self.verdict.spam.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "mailbox_cert_not_after": rfc3339(self.mailbox_cert_not_after),
            "trace": self.trace.to_dict() if self.trace is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        """The inverse of ``to_dict``; a missing or malformed field raises ResultError naming it.

        Fields to_dict omits (late_count, dkim_all, dest, hops, arrived_at, queue_id) keep defaults.
        """
        smtp = _get(data, "smtp", dict)
        return cls(
            status=_get(data, "status", Status, required=True),
            stage=_get(data, "stage", Stage, required=True),
            reason=_get(data, "reason", Reason, required=True),
            target=_get(data, "target", str, required=True),
            message=_get(data, "message", str, required=True),
            started_at=_get(data, "started_at", dt.datetime, required=True),
            remedy=_get(data, "remedy", str),
            timings=Timings.from_dict(_get(data, "timings", dict) or {}),
            smtp=SmtpReceipt.from_dict(smtp) if smtp is not None else None,
            arrival=Arrival.from_dict(_get(data, "arrival", dict) or {}),
            verdict=HeaderVerdict.from_dict(data),
            probe_id=_get(data, "probe_id", str),
            checks=[CheckResult.from_dict(c) for c in _checks(data)],
            mailbox_cert_not_after=_get(data, "mailbox_cert_not_after", dt.datetime),
            trace=Trace.from_dict(trace) if (trace := _get(data, "trace", dict)) else None,
        )


def _checks(data: dict[str, Any]) -> list[Any]:
    value = data.get("checks")
    if value is None:
        return []  # results of versions before the checks list
    if not isinstance(value, list):
        raise ResultError("checks", f"{value!r} is not a list")
    return value
