"""Microsoft's message trace over Graph for one probe: the query, the typed result, a limiter."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.config.clouds import cloud_of
from probe.failure import ProbeFailure
from probe.graph.client import GraphClient, GraphError, graph_time, odata_quote
from probe.m365.tokens import TokenProvider, provider_for, token_refused
from probe.result import ProbeResult, Reason, Stage, Status, Trace, TraceEvent

if TYPE_CHECKING:
    from probe.config import Auth, Target

log = logging.getLogger("relayprobe.trace")

_TRACES = "/admin/exchange/tracing/messageTraces"
#: Statuses that say more than "not in the mailbox in time" (exchangeMessageTrace.status).
_TELLING = ("quarantined", "failed", "filteredAsSpam", "pending")


class TraceLimiter:
    """At most ``per_minute`` traces a minute in this process, over every target: Microsoft
    allows 100 message-trace requests per 5 minutes (docs/m365.md#message-trace), and a fleet
    of failing targets must not spend that on itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: collections.deque[float] = collections.deque()

    def allow(self, per_minute: int) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._sent and now - self._sent[0] >= 60.0:
                self._sent.popleft()
            if len(self._sent) >= per_minute:
                return False
            self._sent.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()


#: The one limiter of this process.
LIMITER = TraceLimiter()


@dataclass(frozen=True)
class TraceQuery:
    """What identifies one probe in the message trace (filters of List messageTraces)."""

    sender: str
    recipient: str
    start: dt.datetime
    end: dt.datetime
    message_id: str | None = None  # the probe's Message-ID header, when known
    probe_id: str | None = None  # else: the probe id in the subject


def trace_auth(target: Target) -> Auth:
    """The mailbox's app-only client, asking for Graph's scope in the target's cloud."""
    auth = target.mailbox.auth
    return auth.model_copy(update={"scope": cloud_of(target.cloud).graph_scope})


def trace_url(target: Target) -> str:
    """Graph's service root for the trace: trace.graph_url, a graph mailbox's, or the cloud's."""
    if target.trace.graph_url:
        return target.trace.graph_url
    if target.mailbox.protocol == "graph" and target.mailbox.graph_url:
        return target.mailbox.graph_url
    return cloud_of(target.cloud).graph


async def query_trace(
    target: Target,
    query: TraceQuery,
    *,
    token_provider: TokenProvider | None = None,
    limit: bool = True,
) -> Trace:
    """Microsoft's message trace of one probe; every failure becomes a Trace with status
    ``error`` (or ``rate_limited``), never an exception: a trace only explains a result."""
    now = dt.datetime.now(dt.UTC)
    if limit and not LIMITER.allow(target.trace.max_per_minute):
        return Trace(
            "rate_limited",
            now,
            f"not queried: this process already ran {target.trace.max_per_minute} message "
            "traces in the last minute (trace.max_per_minute)",
        )
    provider = token_provider or provider_for(trace_auth(target))
    loop = asyncio.get_running_loop()

    def token() -> str:
        assert provider is not None
        return asyncio.run_coroutine_threadsafe(provider(), loop).result(60)

    ca = target.trace.ca_file or (
        target.mailbox.ca_file if target.mailbox.protocol == "graph" else None
    )
    client = GraphClient(
        trace_url(target),
        token=token,
        refused=lambda t: token_refused(provider, t),
        ca_file=ca,
        timeout=target.mailbox.timeout,
    )
    try:
        return await asyncio.to_thread(_run, client, query)
    except GraphError as exc:
        status = "error"
        hint = {
            "throttled": "message trace is throttled (100 requests per 5 minutes per tenant)",
            "denied": "grant the app ExchangeMessageTrace.Read.All (admin consent) and provision "
            "the message trace service principal (docs/configuration.md#message-trace)",
        }.get(exc.kind, "Graph could not answer")
        return Trace(status, now, f"message trace failed: {exc}; {hint}")
    except ProbeFailure as failure:
        return Trace("error", now, f"message trace failed: {failure.message}")
    finally:
        client.close()


def _run(client: GraphClient, q: TraceQuery) -> Trace:
    """List messageTraces with every filter that narrows it, then the recipient's details."""
    when = q.start.astimezone(dt.UTC)
    # Both bounds are required; at most 10 days apart; the end not in the future.
    end = min(q.end.astimezone(dt.UTC), dt.datetime.now(dt.UTC))
    parts = [
        f"senderAddress eq {odata_quote(q.sender)}",
        f"recipientAddress eq {odata_quote(q.recipient)}",
        f"receivedDateTime ge {_iso(when)}",
        f"receivedDateTime le {_iso(max(end, when))}",
    ]
    if q.message_id:
        parts.insert(0, f"messageId eq {odata_quote(q.message_id)}")
    elif q.probe_id:
        parts.insert(0, f"contains(subject, {odata_quote(q.probe_id)})")
    answer = client.request("GET", _TRACES, params={"$filter": " and ".join(parts)})
    records = [r for r in answer.body.get("value") or [] if isinstance(r, dict)]
    queried = dt.datetime.now(dt.UTC)
    if not records:
        return Trace(
            "not_found",
            queried,
            "message trace has no record of the probe yet (trace data can lag by minutes; "
            "run relayprobe trace later)",
        )
    record = records[0]
    status = str(record.get("status") or "gettingStatus")
    trace_id = str(record.get("id") or "")
    events: list[TraceEvent] = []
    if trace_id:
        path = (
            f"{_TRACES}/{trace_id}/getDetailsByRecipient"
            f"(recipientAddress={odata_quote(q.recipient)})"
        )
        details = client.request("GET", path).body.get("value") or []
        for d in details:
            if isinstance(d, dict):
                events.append(
                    TraceEvent(
                        graph_time(d.get("dateTime")),
                        str(d.get("event") or ""),
                        d.get("action") or None,
                        " ".join(str(d.get("description") or "").split()) or None,
                    )
                )
    detail = _detail(status, events)
    said = f"Microsoft's message trace: {status}"
    return Trace(
        status,
        queried,
        f"{said} ({detail})" if detail else said,
        trace_id=trace_id or None,
        events=events,
        detail=detail,
    )


def _detail(status: str, events: list[TraceEvent]) -> str | None:
    """The event that explains ``status``: a failure's NDR code, the quarantine, the spam
    verdict, the deferral; the last event otherwise."""
    words = {
        "failed": ("fail", "drop", "reject"),
        "quarantined": ("quarantine",),
        "filteredAsSpam": ("spam", "junk"),
        "pending": ("defer", "pending", "hold"),
    }.get(status, ())
    for e in reversed(events):
        text = f"{e.event} {e.description or ''}".lower()
        if any(w in text for w in words):
            return f"{e.event}: {e.description or ''}".strip().rstrip(":")
    if events and status in _TELLING:
        last = events[-1]
        return f"{last.event}: {last.description or ''}".strip().rstrip(":")
    return None


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wants_trace(result: ProbeResult) -> bool:
    """A result worth a trace: the probe timed out, was junked unexpectedly, or came late."""
    return result.reason in (
        Reason.DELIVERY_TIMEOUT,
        Reason.JUNKED,
        Reason.PLACEMENT_MISMATCH,
        Reason.LATENCY_WARNING,
        Reason.LATENCY_CRITICAL,
    )


def apply_trace(result: ProbeResult, trace: Trace) -> ProbeResult:
    """Attach ``trace`` and let it name the reason where it says more than the probe saw:
    Quarantined becomes ``quarantined`` (a new reason: the path delivers into quarantine, an
    admin must act); Failed and Pending explain a timeout in the message and remedy."""
    result.trace = trace
    if trace.status == "quarantined" and result.reason is Reason.DELIVERY_TIMEOUT:
        result.status, result.stage, result.reason = (
            Status.CRITICAL,
            Stage.DELIVER,
            Reason.QUARANTINED,
        )
        result.message = (
            f"deliver: the relay accepted the probe but Microsoft quarantined it "
            f"({trace.detail or 'message trace status Quarantined'})"
        )
        result.remedy = QUARANTINE_REMEDY
    elif trace.status in ("failed", "pending", "filteredAsSpam") and (
        result.reason is Reason.DELIVERY_TIMEOUT
    ):
        said = {
            "failed": "Exchange gave up delivering it",
            "pending": "Exchange still holds it (deferred or queued)",
            "filteredAsSpam": "Exchange filtered it as spam",
        }[trace.status]
        result.message += f"; message trace: {trace.status}: {said}" + (
            f" ({trace.detail})" if trace.detail else ""
        )
        result.remedy = {
            "failed": "read the NDR code in the trace (relayprobe explain CODE) and fix what it "
            "names; the relay accepted the mail, Exchange refused it afterwards",
            "pending": "Exchange is retrying: look at the trace events for the deferral reason "
            "(a connector, the recipient's mailbox); the probe counts as late if it arrives",
            "filteredAsSpam": "see the spam verdict in the trace; allow the probe's sender in "
            "the anti-spam policy or fix SPF/DKIM/DMARC of mail_from",
        }[trace.status]
    return result


QUARANTINE_REMEDY = (
    "an admin releases the probe in the Microsoft Defender portal (Email & collaboration > "
    "Review > Quarantine) and finds why it was quarantined (the trace's spam or policy "
    "verdict): allow the sender or fix SPF/DKIM/DMARC of mail_from; real mail on this path "
    "is quarantined too"
)
