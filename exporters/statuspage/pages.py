"""Whole pages: the overview and wall mode, a target's detail, "probe now" and refusals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from exporters.statuspage.history import describe, state_svg
from exporters.statuspage.markup import (
    Page,
    ago,
    badge,
    esc,
    icon,
    seconds,
    shell,
    span,
    target_href,
    until,
)
from exporters.statuspage.posture import posture_section
from exporters.statuspage.trace import trace_section
from exporters.statuspage.view import (
    Summary,
    TargetView,
    auth_line,
    ordinal_failures,
    placement,
    summarize,
    views,
)
from exporters.store import HISTORY_LENGTH, HistoryEntry, TargetState
from probe import ProbeResult, rfc3339

NextRun = Callable[[str], dt.datetime | None]

__all__ = [
    "Page",
    "method_page",
    "not_found_page",
    "overview_page",
    "probe_result_page",
    "refused_page",
    "target_page",
]


# -- pieces shared by the pages -----------------------------------------------------------------
def _banner(
    s: Summary,
    *,
    now: dt.datetime,
    instance: str,
    refresh: int,
    reload_errors: Sequence[str],
    root: str,
) -> str:
    chips = "".join(
        f'<span class="count count-{esc(state)}" data-state="{esc(state)}" data-count="{n}">'
        f"{icon(state, 14)}{n} {esc(state)}</span>"
        for state, n in s.counts.items()
        if n or state == "ok"
    )
    title = "relayprobe" + (f" {instance}" if instance else "")
    if refresh > 0:
        refreshing = (
            f'refreshes every {esc(span(refresh))} (<a href="{esc(root)}?refresh=0">stop</a>)'
        )
    else:
        refreshing = f'not refreshing (<a href="{esc(root)}">resume</a>)'
    reload = ""
    if reload_errors:
        reload = (
            '<div class="reload-failed" role="alert">The last configuration reload failed; the '
            f"previous configuration keeps running: {esc('; '.join(reload_errors))}</div>"
        )
    return (
        f'<header class="banner banner-{esc(s.worst)}" data-worst="{esc(s.worst)}" '
        f'data-failing="{s.failing}" data-total="{s.total}">'
        f'<div class="headline">{icon(s.worst)}<span><span class="title">{esc(title)}:</span> '
        f'<span class="summary">{esc(s.headline)}</span></span></div>'
        f'<div class="counts">{chips}</div>'
        f'<div class="meta">newest result {ago(s.newest, now, never="none yet")} · page at '
        f"{esc(now.strftime('%H:%M:%S UTC'))} · {refreshing}</div>{reload}</header>"
    )


def _schedule(v: TargetView, now: dt.datetime) -> list[str]:
    st = v.state
    parts = [f"next run {until(v.next_run, now)}"]
    if st.backoff_seconds > 0:
        parts.append(
            f'<span class="backoff" data-backoff="{st.backoff_seconds:g}"><b>backoff '
            f"{esc(span(st.backoff_seconds))}</b> ({esc(ordinal_failures(st.consecutive_config_failures))})"
            "</span>"
        )
    parts.append(f"every {esc(span(st.interval))}")
    return parts


def _checks(result: ProbeResult) -> str:
    """The failed checks as chips (name and state; the message says the rest)."""
    items = "".join(
        f'<li class="check-{esc(c.status.value)}" title="{esc(c.message)}">{esc(c.check)}</li>'
        for c in result.failed_checks
    )
    return f' <ul class="checks" aria-label="failed checks">{items}</ul>' if items else ""


def _why(result: ProbeResult, *, full: bool = True) -> str:
    """Primary reason at its stage, the failed checks, the message and the remedy."""
    if result.reason.value == "ok":
        return f'<div class="why"><span class="message muted">{esc(result.message)}</span></div>'
    out = (
        f'<div class="why"><div><span class="reason">{esc(result.reason.value)}</span> '
        f'<span class="muted">at {esc(result.stage.value)}</span>{_checks(result)} '
        f'<span class="message">{esc(result.message)}</span></div>'
    )
    if result.remedy and full:
        out += f'<div class="remedy"><b>Remedy:</b> {esc(result.remedy)}</div>'
    return out + "</div>"


#: The readiness warning on the row of a target that sends with SMTP AUTH and a password in mode
#: submission (docs/runbook.md, "RelayProbeBasicAuthInUse"), shown on hover.
BASIC_AUTH_NOTE = (
    "Sends with SMTP AUTH and a password (mode submission): Microsoft 365 switches this off by "
    "default for existing tenants at the end of December 2026. Move the target, and the "
    "applications it stands for, to OAuth (auth.method oauth2, XOAUTH2) or to High Volume Email "
    "or Azure Communication Services (mode hve or acs)."
)


def _readiness(st: TargetState) -> str:
    if not st.basic_auth_submission:
        return ""
    return f' <span class="readiness" title="{esc(BASIC_AUTH_NOTE)}">basic auth</span>'


def _probe_button(root: str, name: str) -> str:
    return (
        f'<form method="post" action="{target_href(root, name, "probe")}">'
        f'<button type="submit" title="sends one probe mail now and shows its result">Probe now'
        "</button></form>"
    )


def _row(v: TargetView, now: dt.datetime, root: str) -> str:
    st, r = v.state, v.last
    name = esc(v.name)
    facts = _schedule(v, now)
    if r is None:
        age = '<span class="muted">no run yet</span>'
        why = '<div class="why muted">waiting for the first run</div>'
    else:
        age = ago(st.finished_at, now)
        delivery = r.timings.delivery_seconds
        facts.insert(0, f"placement {esc(placement(r))}")
        if delivery is not None:
            facts.insert(0, f"delivery {esc(seconds(delivery))}")
        if auth_line(r):
            facts.append(esc(auth_line(r)))
        why = _why(r)
    entries = list(st.history)
    failed = sum(not e.success for e in entries)
    caption = f"{len(entries)} run{'s' if len(entries) != 1 else ''} · {failed} failed"
    if any(e.delivery_seconds is not None for e in entries):
        caption += " · delivery time, log scale"
    return (
        f'<article class="target state-{esc(v.key)}" id="target-{name}" data-name="{name}" '
        f'data-state="{esc(v.key)}" data-runs="{st.runs}">'
        f'<div class="state">{badge(v.key, v.label)}<span class="age">{age}</span></div>'
        f'<div class="main"><h2><a href="{target_href(root, v.name)}">{name}</a>'
        f"{_readiness(st)}</h2>"
        f'<div class="facts">{" · ".join(facts)}</div>{why}</div>'
        f'<div class="history-cell">{state_svg(st)}'
        f'<div class="history-caption">{esc(caption)}</div></div>'
        f'<div class="actions">{_probe_button(root, v.name)}'
        f'<a href="{target_href(root, v.name)}">Details</a></div></article>'
    )


def _tile(v: TargetView, now: dt.datetime, root: str) -> str:
    r, st = v.last, v.state
    if r is None:
        line = "no run yet"
    elif r.reason.value == "ok":
        line = f"delivered in {seconds(r.timings.delivery_seconds)}"
    else:
        line = f"{r.reason.value} at {r.stage.value}"
    backoff = (
        f'<div class="line backoff">backoff {esc(span(st.backoff_seconds))}</div>'
        if st.backoff_seconds > 0
        else ""
    )
    return (
        f'<article class="tile target-tile state-{esc(v.key)}" data-name="{esc(v.name)}" '
        f'data-state="{esc(v.key)}" data-runs="{st.runs}">{badge(v.key, v.label)}'
        f'<h2><a href="{target_href(root, v.name)}">{esc(v.name)}</a></h2>'
        f'<div class="line">{esc(line)}</div>'
        f'<div class="line muted">{ago(st.finished_at, now, never="waiting for the first run")}'
        f"</div>{backoff}{state_svg(st, marks_only=True)}</article>"
    )


# -- the overview -------------------------------------------------------------------------------
def overview_page(
    states: Iterable[TargetState],
    *,
    next_run: NextRun,
    now: dt.datetime,
    version: str,
    instance: str = "",
    reload_errors: Sequence[str] = (),
    wall: bool = False,
    refresh: int = 10,
    posture: Sequence[Any] = (),
) -> Page:
    """``/``: the summary banner and one row per target, worst first; ``wall``: tiles only;
    ``posture``: the monitored sending domains (exporters/posture.py), a section below."""
    targets = views(states, next_run)
    s = summarize(targets)
    banner = _banner(
        s, now=now, instance=instance, refresh=refresh, reload_errors=reload_errors, root=""
    )
    title = f"{s.headline.capitalize()} · relayprobe" + (f" {instance}" if instance else "")
    if wall:
        tiles = "".join(_tile(v, now, "") for v in targets)
        return shell(
            title,
            f'{banner}<main class="tiles">{tiles}</main>',
            root="",
            refresh=refresh,
            wall=True,
        )
    rows = "\n".join(_row(v, now, "") for v in targets)
    legend = (
        f'<p class="muted legend">relayprobe {esc(version)}: the results of the scheduled probe '
        "runs, worst first. Each strip shows a target's last "
        f"{HISTORY_LENGTH} runs, one mark each (height and colour by state: ok lowest, critical "
        "full height), over its delivery time on a log scale with the warning and critical "
        "thresholds dashed. Times show their exact value on hover.</p>"
    )
    body = f'{banner}<main class="targets" id="results">\n{rows}\n</main>{legend}'
    body += posture_section(posture, now)
    return shell(title, body, root="", refresh=refresh)


# -- a target's detail view, and a single result ------------------------------------------------
def _kv(rows: Iterable[tuple[str, str]], caption: str = "") -> str:
    """A two-column table; values are already-escaped HTML."""
    cap = f'<caption class="muted">{esc(caption)}</caption>' if caption else ""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cap}{body}</table>'


def _opt(value: object) -> str:
    return "—" if value is None or value == "" else esc(value)


def _when(when: dt.datetime | None, now: dt.datetime) -> str:
    if when is None:
        return "—"
    return f'{ago(when, now)} <span class="muted">({esc(rfc3339(when))})</span>'


def result_sections(result: ProbeResult, now: dt.datetime, finished_at: dt.datetime | None) -> str:
    """Everything one result says: outcome, checks, timings, SMTP, arrival, verdict, hops."""
    r, t = result, result.timings
    outcome = _kv(
        [
            ("Status", badge(r.status.value, r.status.value.upper())),
            ("Success", "yes" if r.success else "no"),
            (
                "Stage / reason",
                f'<span class="reason">{esc(r.stage.value)} / {esc(r.reason.value)}</span>',
            ),
            ("Message", esc(r.message)),
            ("Remedy", _opt(r.remedy)),
            ("Probe id", _opt(r.probe_id)),
            ("Started", _when(r.started_at, now)),
            ("Finished", _when(finished_at, now)),
        ]
    )
    if r.checks:
        rows = "".join(
            f'<tr class="row-{esc(c.status.value)}"><td>{esc(c.check)}</td>'
            f"<td>{'met' if c.ok else 'NOT MET'}</td><td>{esc(c.status.value)}</td>"
            f"<td>{esc(c.reason.value)}</td><td>{esc(c.message)}</td></tr>"
            for c in r.checks
        )
        checks = (
            '<table class="checks-table"><thead><tr><th>Check</th><th>Met</th><th>Status</th>'
            f"<th>Reason</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    else:
        checks = '<p class="muted">No checks: nothing was delivered.</p>'
    timings = _kv(
        [(f"SMTP {phase}", esc(seconds(value, 3))) for phase, value in t.smtp_phases()]
        + [
            ("Delivery", esc(seconds(t.delivery_seconds, 3))),
            ("Total", esc(seconds(t.total_seconds, 3))),
        ]
    )
    smtp = r.smtp
    smtp_rows = (
        [
            ("Relay", esc(f"{smtp.host}:{smtp.port}")),
            ("TLS", _opt(" ".join(x for x in (smtp.tls_version, smtp.cipher) if x))),
            (
                "Certificate expires",
                _when(smtp.cert_not_after, now) if smtp.cert_not_after else "—",
            ),
            ("Last reply", _opt(f"{smtp.reply_code or ''} {smtp.reply or ''}".strip())),
            ("Queue id", _opt(smtp.queue_id)),
        ]
        if smtp is not None
        else [("Relay", "— (no SMTP session)")]
    )
    arrival = _kv(
        [
            ("Placement", esc(placement(r))),
            ("Folder", _opt(r.arrival.folder)),
            ("Late probes cleaned this run", esc(r.arrival.late_count)),
        ]
    )
    a, sp = r.verdict.auth, r.verdict.spam
    auth = _kv(
        [
            ("SPF", _opt(a.spf)),
            (
                "DKIM",
                _opt(a.dkim)
                + (
                    f' <span class="muted">(all: {esc(", ".join(a.dkim_all))})</span>'
                    if len(a.dkim_all) > 1
                    else ""
                ),
            ),
            (
                "DMARC",
                _opt(a.dmarc)
                + (
                    f' <span class="muted">(action {esc(a.dmarc_action)})</span>'
                    if a.dmarc_action
                    else ""
                ),
            ),
            (
                "compauth",
                _opt(a.compauth)
                + (
                    f' <span class="muted">(reason {esc(a.compauth_reason)})</span>'
                    if a.compauth_reason
                    else ""
                ),
            ),
            ("Read from", _opt(a.source)),
        ],
        "Authentication verdict",
    )
    spam = _kv(
        [
            ("SCL", _opt(sp.scl)),
            ("BCL", _opt(sp.bcl)),
            ("SFV", _opt(sp.sfv)),
            ("CAT", _opt(sp.cat)),
            ("Delivery destination", _opt(sp.dest)),
        ],
        "Spam verdict",
    )
    if r.verdict.hops:
        hop_rows = "".join(
            f"<tr><td>{i}</td><td>{_opt(h.from_)}</td><td>{_opt(h.by)}</td>"
            f"<td>{_opt(rfc3339(h.at))}</td><td>{esc(seconds(h.delay_seconds, 3))}</td></tr>"
            for i, h in enumerate(r.verdict.hops, 1)
        )
        hops = (
            '<table class="hops"><thead><tr><th>#</th><th>From</th><th>By</th><th>At</th>'
            f"<th>Delay</th></tr></thead><tbody>{hop_rows}</tbody></table>"
        )
    else:
        hops = '<p class="muted">No Received hops (nothing was delivered, or none were read).</p>'
    return (
        f'<section class="box result"><h3>Outcome</h3>{outcome}<h3>Checks</h3>{checks}</section>'
        f'<section class="box"><div class="grid2"><div><h3>Timings</h3>{timings}</div>'
        f"<div><h3>SMTP</h3>{_kv(smtp_rows)}<h3>Arrival</h3>{arrival}</div></div></section>"
        f'<section class="box verdict"><h3>Verdict headers read</h3><div class="grid2">'
        f"<div>{auth}</div><div>{spam}</div></div><h3>Hops</h3>{hops}</section>" + trace_section(r)
    )


def _entry_placement(e: HistoryEntry) -> str:
    if not e.sent:
        return "not sent"
    return "not found" if e.placement == "missing" else e.placement


def _history_table(state: TargetState, now: dt.datetime) -> str:
    if not state.history:
        return '<p class="muted">No runs yet.</p>'
    rows = "".join(
        f'<tr class="row-{esc(e.status)}"><td class="nowrap">{ago(e.finished_at, now)}</td>'
        f'<td class="nowrap">{esc(e.status.upper())}</td><td>{esc(e.stage)} / {esc(e.reason)}'
        f'</td><td class="nowrap">{esc(seconds(e.delivery_seconds))}</td><td class="nowrap">'
        f"{esc(seconds(e.total_seconds))}</td><td>{esc(_entry_placement(e))}</td>"
        f'<td>{esc(", ".join(e.failed_checks)) or "—"}</td><td class="text">{esc(e.message)}'
        f'</td><td class="nowrap">{_opt(e.probe_id)}</td></tr>'
        for e in reversed(state.history)
    )
    return (
        '<table class="history-table"><thead><tr><th>Finished</th><th>Status</th>'
        "<th>Stage / reason</th><th>Delivery</th><th>Total</th><th>Placement</th>"
        "<th>Failed checks</th><th>Message</th><th>Probe id</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def target_page(
    state: TargetState, *, next_run: NextRun, now: dt.datetime, refresh: int = 10
) -> Page:
    """``/target/NAME``: the target's state, schedule, counters, history and full last result."""
    root = "../"
    v = TargetView(state, next_run(state.name))
    st, r = state, state.last
    thresholds = ", ".join(f"{level} {value:g} s" for level, value in st.thresholds) or "none"
    facts = _kv(
        [
            ("Last run", _when(st.finished_at, now)),
            ("Next run", until(v.next_run, now)),
            ("Interval", esc(span(st.interval))),
            (
                "Backoff",
                esc(
                    f"{span(st.backoff_seconds)} ({ordinal_failures(st.consecutive_config_failures)})"
                )
                if st.backoff_seconds > 0
                else "none",
            ),
            ("Runs / failed", esc(f"{st.runs} / {st.failed_runs}")),
            ("Last success", _when(st.last_success_at, now) if st.last_success_at else "never"),
            ("Late deliveries / junked", esc(f"{st.late} / {st.junk}")),
            ("Delivery thresholds", esc(thresholds)),
            (
                "Relay certificate expires",
                _when(st.cert_not_after, now) if st.cert_not_after else "—",
            ),
        ]
    )
    head = (
        f'<div class="detail-head state-{esc(v.key)}" data-name="{esc(v.name)}" '
        f'data-state="{esc(v.key)}" data-runs="{st.runs}"><a href="{esc(root)}">← all targets</a>'
        f"{badge(v.key, v.label)}<h1>{esc(v.name)}</h1>{_probe_button(root, v.name)}</div>"
    )
    why = _why(r) if r is not None else '<p class="muted">Waiting for the first run.</p>'
    history = (
        f'<section class="box"><h3>History</h3>{state_svg(st, scale=2)}'
        f'<p class="muted">{esc(describe(list(st.history)))}</p>'
        f"{_history_table(st, now)}</section>"
    )
    last = f"<h2>Last result</h2>{result_sections(r, now, st.finished_at)}" if r is not None else ""
    body = (
        f'{head}<section class="box"><div class="grid2"><div>{why}</div><div>{facts}</div></div>'
        f"</section>{history}{last}"
    )
    return shell(f"{v.label} {v.name} · relayprobe", body, root=root, refresh=refresh)


def probe_result_page(
    result: ProbeResult, state: TargetState | None, *, next_run: NextRun, now: dt.datetime
) -> Page:
    """The answer to "probe now" (POST): the fresh result for people. Not refreshed (a refresh
    would re-send the form)."""
    root = "../../"
    key = result.status.value
    finished = state.finished_at if state is not None and state.last is result else now
    head = (
        f'<div class="detail-head state-{esc(key)}" data-name="{esc(result.target)}" '
        f'data-state="{esc(key)}"><a href="{esc(root)}">← all targets</a>{badge(key, key.upper())}'
        f"<h1>Probe of {esc(result.target)}: {esc(key.upper())}</h1>"
        f'<a href="{target_href(root, result.target)}">target details</a></div>'
    )
    body = f'{head}<section class="box">{_why(result)}</section>{result_sections(result, now, finished)}'
    return shell(f"Probe of {result.target}: {key.upper()} · relayprobe", body, root=root)


def refused_page(name: str, why: str, *, root: str, status: int) -> Page:
    """ "Probe now" refused (429: busy or too soon; 403: a cross-site form)."""
    body = (
        f'<div class="notice"><h1>Not probed: {esc(name)}</h1><p>{esc(why)}</p>'
        f'<p><a href="{target_href(root, name)}">Back to {esc(name)}</a> · '
        f'<a href="{esc(root)}">all targets</a></p></div>'
    )
    return shell(f"Not probed: {name} · relayprobe", body, root=root, status=status)


def method_page(name: str) -> Page:
    """GET on the "probe now" URL (405): probing sends mail, so only the POST button does it."""
    root = "../../"
    body = (
        f'<div class="notice"><h1>Probe {esc(name)} now?</h1><p>Probing sends one probe mail '
        "through the relay, so it needs a POST (this button); a link or a GET never sends mail. "
        "Prometheus-style on-demand probes are at <code>/probe?target=NAME</code>.</p>"
        f'{_probe_button(root, name)}<p><a href="{target_href(root, name)}">Back to '
        f"{esc(name)}</a></p></div>"
    )
    return shell(f"Probe {name} now? · relayprobe", body, root=root, status=405)


def not_found_page(name: str, configured: Sequence[str], *, root: str) -> Page:
    links = ", ".join(f'<a href="{target_href(root, n)}">{esc(n)}</a>' for n in configured)
    body = (
        f'<div class="notice"><h1>No target {esc(name)}</h1><p>Configured: {links or "none"}.'
        f'</p><p><a href="{esc(root)}">All targets</a></p></div>'
    )
    return shell(f"No target {name} · relayprobe", body, root=root, status=404)
