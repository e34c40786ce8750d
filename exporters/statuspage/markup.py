"""HTML building blocks: escaping, times in words, state icons, the page shell and its style."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import urllib.parse
from dataclasses import dataclass


def esc(value: object) -> str:
    """``value`` as HTML text or attribute value: every value on every page goes through here."""
    return html.escape(str(value), quote=True)


def target_href(root: str, name: str, *rest: str) -> str:
    """The (relative, escaped) URL of a target's page or action."""
    parts = ["target", urllib.parse.quote(name, safe=""), *rest]
    return esc(root + "/".join(parts))


# -- times --------------------------------------------------------------------------------------
def span(seconds: float) -> str:
    """A duration in words for people: ``23 s``, ``4 min``, ``3 h 12 min``, ``2 d 4 h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def absolute(when: dt.datetime) -> str:
    """An absolute time for the hover text: ``2026-11-27 14:36:27 UTC``."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(when: dt.datetime | None, now: dt.datetime, *, never: str = "never") -> str:
    """``<time>`` saying how long ago ``when`` was (``23 s ago``; ``in 30 d`` if it is still to
    come), the absolute time on hover."""
    if when is None:
        return esc(never)
    past = (now - when).total_seconds()
    text = f"{span(past)} ago" if past > -0.5 else f"in {span(-past)}"  # e.g. a cert's expiry
    return f'<time datetime="{esc(_iso(when))}" title="{esc(absolute(when))}">{esc(text)}</time>'


def until(when: dt.datetime | None, now: dt.datetime, *, none: str = "not scheduled") -> str:
    """``<time>`` saying how far ahead ``when`` is (``in 7 s``; ``due now`` once it passed)."""
    if when is None:
        return esc(none)
    left = (when - now).total_seconds()
    text = f"in {span(left)}" if left >= 0.5 else "due now"
    return f'<time datetime="{esc(_iso(when))}" title="{esc(absolute(when))}">{esc(text)}</time>'


def seconds(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f} s"


# -- states -------------------------------------------------------------------------------------
#: Each state's icon: a distinct shape (circle, triangle, octagon, diamond) besides its colour,
#: so the states are told apart without colour vision and without fonts with symbol glyphs.
_ICON_SHAPES = {
    "ok": '<circle cx="8" cy="8" r="7.5"/><path d="M4.2 8.4l2.5 2.5 5-5.2" class="glyph"/>',
    "warning": '<path d="M8 .6l7.6 14.2H.4z"/><path d="M8 5.5v4.6M8 12v.9" class="glyph"/>',
    "critical": (
        '<path d="M5 .5h6l4.5 4.5v6L11 15.5H5L.5 11V5z"/><path d="M5.3 5.3l5.4 5.4M10.7 5.3l-5.4 '
        '5.4" class="glyph"/>'
    ),
    "unknown": (
        '<path d="M8 .3l7.7 7.7L8 15.7.3 8z"/><path d="M6 6.2a2 2 0 1 1 2.6 1.9c-.5.2-.6.5-.6 1v.6'
        'M8 11.6v.8" class="glyph"/>'
    ),
}


def icon(state: str, size: int = 16) -> str:
    """The state's icon as inline SVG (decorative: the state is always written next to it)."""
    return (
        f'<svg class="icon icon-{esc(state)}" width="{size}" height="{size}" viewBox="0 0 16 16" '
        f'aria-hidden="true" focusable="false">{_ICON_SHAPES[state]}</svg>'
    )


def badge(state: str, label: str) -> str:
    return f'<span class="badge badge-{esc(state)}">{icon(state)}{esc(label)}</span>'


# -- the page shell -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    """A rendered page and the hash of its one inline style (for the Content-Security-Policy)."""

    text: str
    style_sha256: str
    status: int = 200


def shell(
    title: str,
    body: str,
    *,
    root: str,
    refresh: int = 0,
    wall: bool = False,
    status: int = 200,
) -> Page:
    """A whole page: ``refresh`` > 0 reloads it every that many seconds (works without JS)."""
    style = STYLE + (WALL_STYLE if wall else "")
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">\n' if refresh > 0 else ""
    text = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{meta}<title>{esc(title)}</title>\n<style>{style}</style></head>\n"
        f'<body class="{"wall" if wall else "normal"}">\n{body}\n'
        f'<footer><a href="{esc(root)}">Status</a> · <a href="{esc(root)}?wall=1">Wall screen</a>'
        f' · <a href="{esc(root)}metrics">Metrics</a> · <a href="{esc(root)}api/results">Results'
        f' (JSON)</a> · <a href="{esc(root)}-/healthy">Health</a> · <a href="{esc(root)}-/ready">'
        "Readiness</a></footer>\n</body></html>\n"
    )
    return Page(text, digest, status)


#: Colours: the state hues differ in lightness as well (the warning amber is light, the critical
#: red and unknown violet dark), and every state also has its icon shape, its word and, in the
#: history strip, its own mark height.
STYLE = """
:root { --ok: #1e7b34; --ok-bg: #ffffff; --warning: #e0a100; --warning-bg: #fff6dc;
  --critical: #c4161c; --critical-bg: #fdebec; --unknown: #5b3a99; --unknown-bg: #f1ecfa;
  --muted: #5a5f66; --line: #d5d8dc; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { font: 14px/1.35 system-ui, "DejaVu Sans", "Segoe UI", Arial, sans-serif; color: #16181b;
  margin: 0 auto; padding: 12px 16px; max-width: 1900px; background: #f6f7f8; }
a { color: #0b57a4; }
h1 { font-size: 1.35em; margin: 0 0 8px; }
h2 { font-size: 1.15em; margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 1em; margin: 14px 0 6px; }
footer { margin-top: 14px; color: var(--muted); font-size: .9em; }
time { white-space: nowrap; }
.muted { color: var(--muted); }
.nowrap { white-space: nowrap; }
.icon { vertical-align: -3px; margin-right: 5px; flex: none; }
.icon .glyph { fill: none; stroke: #fff; stroke-width: 2; stroke-linecap: round; }
.icon-ok { fill: var(--ok); } .icon-warning { fill: var(--warning); }
.icon-warning .glyph { stroke: #111; }
.icon-critical { fill: var(--critical); } .icon-unknown { fill: var(--unknown); }
.badge { display: inline-flex; align-items: center; font-weight: 700; letter-spacing: .03em;
  padding: 2px 8px 2px 5px; border-radius: 4px; white-space: nowrap; color: #fff; }
.badge .icon { fill: rgba(255, 255, 255, .25); }
.badge-ok { background: var(--ok); } .badge-critical { background: var(--critical); }
.badge-warning { background: var(--warning); color: #111; }
.badge-warning .icon { fill: rgba(0, 0, 0, .15); } .badge-warning .icon .glyph { stroke: #111; }
.badge-unknown { background: var(--unknown); }
.banner { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 22px; color: #fff;
  padding: 10px 16px; border-radius: 6px; margin-bottom: 12px; }
.banner-ok { background: var(--ok); } .banner-critical { background: var(--critical); }
.banner-warning { background: var(--warning); color: #111; }
.banner-unknown { background: var(--unknown); }
.banner .headline { font-size: 1.45em; font-weight: 700; display: flex; align-items: center; }
.banner .headline .icon { width: 26px; height: 26px; margin-right: 10px; }
.banner .icon .glyph { stroke: #fff; }
.banner .icon { fill: rgba(0, 0, 0, .28); }
.banner .counts { display: flex; gap: 6px; flex-wrap: wrap; }
.banner .count { background: #fff; color: #16181b; border-radius: 4px; padding: 1px 8px;
  font-weight: 600; display: inline-flex; align-items: center; }
.banner .count .icon { fill: currentColor; }
.banner .count-critical .icon { fill: var(--critical); }
.banner .count-ok .icon { fill: var(--ok); } .banner .count-warning .icon { fill: var(--warning); }
.banner .count-unknown .icon { fill: var(--unknown); }
.banner .count-warning .icon .glyph { stroke: #111; }
.banner .meta { font-size: .95em; }
.banner a { color: inherit; }
.reload-failed { flex-basis: 100%; background: #fff; color: var(--critical); font-weight: 600;
  padding: 4px 8px; border-radius: 4px; overflow-wrap: anywhere; }
.targets { display: flex; flex-direction: column; gap: 8px; }
.target { display: grid; grid-template-columns: 9.5em minmax(0, 1fr) 324px auto; gap: 4px 16px;
  align-items: start; background: #fff; border: 1px solid var(--line);
  border-left: 8px solid var(--state); border-radius: 6px; padding: 8px 12px; }
.state-ok { --state: var(--ok); background: #fff; }
.state-warning { --state: var(--warning); background: var(--warning-bg); }
.state-critical { --state: var(--critical); background: var(--critical-bg); }
.state-unknown { --state: var(--unknown); background: var(--unknown-bg); }
.target .state { display: flex; flex-direction: column; gap: 4px; align-items: flex-start; }
.target .main { min-width: 0; overflow-wrap: anywhere; }
.target .facts { color: var(--muted); font-size: .92em; margin-top: 1px; }
.readiness { display: inline-block; margin-left: 6px; padding: 0 5px; border-radius: 3px;
  border: 1px solid var(--warning); background: var(--warning-bg); color: #7a5200;
  font-size: .68em; font-weight: 600; vertical-align: 2px; white-space: nowrap; cursor: help; }
.target .why { margin-top: 3px; }
.reason { font-weight: 600; font-family: "DejaVu Sans Mono", ui-monospace, monospace;
  font-size: .92em; }
.checks { display: inline; margin: 0; padding: 0; list-style: none; }
.checks li { display: inline-block; margin: 0 2px; padding: 0 5px; border-radius: 3px;
  border: 1px solid var(--line); background: #fff; font-size: .85em; font-weight: 600; }
.checks .check-critical { border-color: var(--critical); color: var(--critical); }
.checks .check-warning { border-color: var(--warning); color: #7a5200; }
.why .remedy { margin: 2px 0 0; color: #33373c; }
.remedy b { color: #16181b; }
.history { display: block; }
.history-caption { color: var(--muted); font-size: .82em; margin-top: 2px; }
.mark-ok { fill: var(--ok); } .mark-warning { fill: var(--warning); }
.mark-critical { fill: var(--critical); } .mark-unknown { fill: var(--unknown); }
.slot { fill: #eceef0; }
.spark-area { fill: #f3f5f7; }
.spark { fill: none; stroke: #234d7a; stroke-width: 1.4; stroke-linejoin: round; }
.spark-dot { fill: #234d7a; }
.threshold { stroke-width: 1; stroke-dasharray: 3 2; }
.threshold-warning { stroke: #b07d00; } .threshold-critical { stroke: var(--critical); }
.threshold-label { font-size: 8px; font-family: "DejaVu Sans", sans-serif; }
.threshold-label.warning { fill: #8a6200; } .threshold-label.critical { fill: var(--critical); }
.actions { display: flex; flex-direction: column; gap: 6px; align-items: stretch; }
button { font: inherit; font-weight: 600; padding: 4px 10px; white-space: nowrap; border-radius: 4px; cursor: pointer;
  border: 1px solid #0b57a4; background: #0b57a4; color: #fff; }
button:hover, button:focus { background: #084a8c; }
.actions a { text-align: center; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .93em; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
td.text, table.kv td { overflow-wrap: anywhere; }
td.nowrap { white-space: nowrap; }
th { background: #eef0f2; font-weight: 600; }
table.kv th { width: 15em; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(30em, 1fr)); gap: 4px 18px; }
.detail-head { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px;
  background: #fff; border: 1px solid var(--line); border-left: 8px solid var(--state);
  border-radius: 6px; padding: 10px 14px; }
.detail-head h1 { margin: 0; overflow-wrap: anywhere; }
.detail-head form { margin-left: auto; }
section.box { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 6px 14px 12px; margin-top: 10px; overflow-wrap: anywhere; }
tr.row-critical td:first-child { box-shadow: inset 5px 0 var(--critical); }
tr.row-warning td:first-child { box-shadow: inset 5px 0 var(--warning); }
tr.row-unknown td:first-child { box-shadow: inset 5px 0 var(--unknown); }
tr.row-ok td:first-child { box-shadow: inset 5px 0 var(--ok); }
.notice { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
@media (max-width: 1100px) {
  .target { grid-template-columns: 9em minmax(0, 1fr); }
  .target .history-cell { grid-column: 2; }
  .target .actions { grid-column: 2; flex-direction: row; }
}
"""

#: Wall-screen mode (``?wall=1``): large type, the summary and one tile per target only.
WALL_STYLE = """
body.wall { font-size: 22px; max-width: none; padding: 16px 22px; background: #eef0f2; }
body.wall .banner { padding: 16px 22px; }
body.wall .banner .headline { font-size: 1.7em; }
body.wall .banner .headline .icon { width: 40px; height: 40px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(14em, 1fr)); gap: 14px; }
body.wall footer { display: none; }
.tile { border: 1px solid var(--line); border-top: 12px solid var(--state);
  border-radius: 8px; padding: 10px 14px; min-width: 0; }
.tile h2 { font-size: 1.3em; margin: 4px 0 2px; }
.tile h2 a { color: inherit; text-decoration: none; }
.tile .badge { font-size: 1em; }
.tile .badge .icon { width: 24px; height: 24px; }
.tile .line { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.tile .history { width: 100%; height: auto; margin-top: 6px; }
"""
