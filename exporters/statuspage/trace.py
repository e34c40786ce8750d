"""The message trace section of a result page: Microsoft's status, its events and the detail."""

from __future__ import annotations

from exporters.statuspage.markup import esc
from probe import ProbeResult, rfc3339


def trace_section(result: ProbeResult) -> str:
    """Empty without a trace (trace off, or nothing worth tracing); else a box with the status,
    what it means for this probe, and every event Microsoft's message trace lists."""
    trace = result.trace
    if trace is None:
        return ""
    rows = "".join(
        f"<tr><td>{esc(rfc3339(e.at) or '—')}</td><td>{esc(e.event)}</td>"
        f"<td>{esc(e.action or '')}</td><td>{esc(e.description or '')}</td></tr>"
        for e in trace.events
    )
    events = (
        '<table class="hops"><thead><tr><th>At</th><th>Event</th><th>Action</th>'
        f"<th>Description</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else '<p class="muted">No events.</p>'
    )
    detail = f"<p><b>Detail:</b> {esc(trace.detail)}</p>" if trace.detail else ""
    ident = (
        f' <span class="muted">(trace id {esc(trace.trace_id)})</span>' if trace.trace_id else ""
    )
    return (
        f'<section class="box trace"><h3>Message trace</h3>'
        f'<p><span class="reason">{esc(trace.status)}</span>{ident} — {esc(trace.message)}</p>'
        f'{detail}{events}<p class="muted">Asked {esc(rfc3339(trace.queried_at))}</p></section>'
    )
