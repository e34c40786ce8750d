"""The status page's posture section: each monitored sending domain, one row per check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from exporters.statuspage.markup import ago, badge, esc, until

#: Posture states shown with the page's state styles (DNS trouble looks "unknown": nothing known).
_STYLE = {"ok": "ok", "warning": "warning", "critical": "critical", "dns_error": "unknown"}
_LABEL = {"ok": "OK", "warning": "WARNING", "critical": "CRITICAL", "dns_error": "DNS ERROR"}


def _changed(domain: Any, now: dt.datetime) -> str:
    changes = [
        (r.changed_at, name) for name, r in domain.records.items() if r.changed_at is not None
    ]
    if not changes:
        return ""
    when, name = max(changes)
    return f" · record <b>{esc(name)}</b> changed {ago(when, now)}"


def _domain(domain: Any, now: dt.datetime) -> str:
    report = domain.report
    targets = ", ".join(domain.targets)
    if report is None:
        head = badge("unknown", "PENDING")
        rows = '<tr><td colspan="3" class="muted">not checked yet</td></tr>'
        checked = "not checked yet"
    else:
        state = report.state.value
        head = badge(_STYLE[state], _LABEL[state])
        checked = f"checked {ago(report.checked_at, now)} via {esc(report.dns_server)}"
        rows = "".join(
            f'<tr class="row-{_STYLE[c.state.value]}"><td class="nowrap">'
            f'{esc(_LABEL[c.state.value])}</td><td class="nowrap">{esc(c.name)}</td>'
            f'<td class="text">{esc(c.message)}'
            + (f'<br><span class="muted">fix: {esc(c.remedy)}</span>' if c.remedy else "")
            + "</td></tr>"
            for c in report.checks
        )
    nxt = f" · next {until(domain.next_run, now)}" if domain.next_run else ""
    return (
        f'<section class="box posture" id="posture-{esc(domain.domain)}">'
        f"<h3>{head} {esc(domain.domain)}</h3>"
        f'<p class="muted">targets {esc(targets)} · {checked}{nxt}{_changed(domain, now)}</p>'
        f"<table><thead><tr><th>state</th><th>check</th><th>what was found</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def posture_section(domains: Sequence[Any], now: dt.datetime) -> str:
    """Every monitored domain (exporters/posture.py DomainPosture); empty when none is."""
    if not domains:
        return ""
    body = "".join(_domain(d, now) for d in domains)
    return (
        '<section id="posture"><h2>Sending domains: DNS posture</h2>'
        '<p class="muted legend">SPF, DKIM, DMARC, MX, MTA-STS and TLS-RPT of each monitored '
        "sending domain (targets with posture.enabled), checked on their own interval. DNS ERROR: "
        "the DNS server did not answer, so nothing is known (not a posture failure).</p>"
        f"{body}</section>"
    )
