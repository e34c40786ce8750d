"""A target's recent runs as inline SVG: one mark per run, and delivery latency as a sparkline."""

# Both share the x axis (one slot per run, the newest at the right edge), so a gap in the
# sparkline sits under the failed run that caused it. Marks differ in height by state as well as in
# colour (ok lowest, critical full height). Latency is drawn on a log scale so that a 0.5 s relay
# and a 30 s critical threshold fit in 34 pixels; the thresholds are dashed lines.

from __future__ import annotations

import math
from collections.abc import Sequence

from exporters.statuspage.markup import absolute, esc, seconds
from exporters.statuspage.view import STATES
from exporters.store import HISTORY_LENGTH, HistoryEntry, TargetState

SLOT = 5  # px per run
WIDTH = SLOT * HISTORY_LENGTH
GUTTER = 24  # room for the threshold labels right of the plot
MARKS_HEIGHT = 16
SPARK_TOP, SPARK_HEIGHT = 21, 34
HEIGHT = SPARK_TOP + SPARK_HEIGHT + 1
#: Mark height per state: readable without colour (ok short, critical full height).
MARK_HEIGHTS = {"ok": 6, "warning": 10, "unknown": 13, "critical": 16}


def _mark_title(e: HistoryEntry) -> str:
    delivery = f", delivery {seconds(e.delivery_seconds)}" if e.delivery_seconds is not None else ""
    sent = "" if e.sent else ", not sent"
    return f"{absolute(e.finished_at)}: {e.status.upper()} {e.reason} ({e.stage}){delivery}{sent}"


def _marks(entries: Sequence[HistoryEntry], x0: int) -> list[str]:
    out = [f'<rect class="slot" x="0" y="0" width="{WIDTH}" height="{MARKS_HEIGHT}"/>']
    for i, e in enumerate(entries):
        h = MARK_HEIGHTS.get(e.status, MARKS_HEIGHT)
        out.append(
            f'<rect class="mark mark-{esc(e.status)}" x="{x0 + i * SLOT}" y="{MARKS_HEIGHT - h}" '
            f'width="{SLOT - 1}" height="{h}"><title>{esc(_mark_title(e))}</title></rect>'
        )
    return out


def _spark(
    entries: Sequence[HistoryEntry], x0: int, thresholds: Sequence[tuple[str, float]]
) -> list[str]:
    values = [e.delivery_seconds for e in entries if e.delivery_seconds is not None]
    levels = [v for _, v in thresholds]
    if not values and not levels:
        return []
    lo = max(0.01, min(values + levels) / 2)
    hi = max(values + levels) * 1.5
    span = math.log(hi / lo) if hi > lo else 1.0
    bottom = SPARK_TOP + SPARK_HEIGHT

    def y(v: float) -> float:
        return round(bottom - math.log(max(v, lo) / lo) / span * SPARK_HEIGHT, 1)

    out = [
        f'<rect class="spark-area" x="0" y="{SPARK_TOP}" width="{WIDTH}" height="{SPARK_HEIGHT}"/>'
    ]
    label_y = -99.0
    for level, value in sorted(thresholds, key=lambda t: -t[1]):  # top (highest) first
        yy = y(value)
        label_y = max(yy + 3, label_y + 8)  # labels of close thresholds do not overlap
        out.append(
            f'<line class="threshold threshold-{esc(level)}" x1="0" x2="{WIDTH}" y1="{yy}" '
            f'y2="{yy}"><title>{esc(level)} threshold {esc(seconds(value, 3))}</title></line>'
            f'<text class="threshold-label {esc(level)}" x="{WIDTH + 2}" y="{label_y:g}">'
            f"{esc(f'{value:g}s')}</text>"
        )
    path, dots, joined = [], [], False
    for i, e in enumerate(entries):
        if e.delivery_seconds is None:
            joined = False
            continue
        x, yy = x0 + i * SLOT + (SLOT - 1) / 2, y(e.delivery_seconds)
        path.append(f"{'L' if joined else 'M'}{x:g} {yy:g}")
        dots.append(f'<circle class="spark-dot" cx="{x:g}" cy="{yy:g}" r="1.3"/>')  # see the mark
        joined = True
    if path:
        out.append(f'<path class="spark" d="{" ".join(path)}"/>')
    return out + dots


def describe(entries: Sequence[HistoryEntry]) -> str:
    """The figure in words (its accessible name): ``last 12 runs: 10 ok, 2 critical; …``."""
    if not entries:
        return "no runs yet"
    counts = {s: sum(e.status == s for e in entries) for s in STATES}
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    values = [e.delivery_seconds for e in entries if e.delivery_seconds is not None]
    latency = (
        f"; delivery {min(values):.2f}–{max(values):.2f} s, last {values[-1]:.2f} s"
        if values
        else "; no delivery"
    )
    return f"last {len(entries)} run{'s' if len(entries) != 1 else ''}: {parts}{latency}"


def history_svg(
    entries: Sequence[HistoryEntry],
    thresholds: Sequence[tuple[str, float]] = (),
    *,
    marks_only: bool = False,
    scale: float = 1.0,
) -> str:
    """The strip (and, unless ``marks_only``, the sparkline) of up to HISTORY_LENGTH runs."""
    entries = list(entries)[-HISTORY_LENGTH:]
    x0 = WIDTH - len(entries) * SLOT  # the newest run at the right edge
    parts = _marks(entries, x0)
    width, height = WIDTH, MARKS_HEIGHT
    if not marks_only:
        parts += _spark(entries, x0, thresholds)
        width, height = WIDTH + GUTTER, HEIGHT
    label = describe(entries)
    return (
        f'<svg class="history" role="img" aria-label="{esc(label)}" data-runs="{len(entries)}" '
        f'width="{width * scale:g}" height="{height * scale:g}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none"><title>{esc(label)}</title>{"".join(parts)}</svg>'
    )


#: (target name, variant) -> (the history deque drawn, state version, SVG). A page of 200 targets
#: draws 200 strips every refresh; a strip changes only when its target's state does.
_CACHE: dict[tuple[str, bool, float], tuple[object, int, str]] = {}
_CACHE_LIMIT = 4096


def state_svg(state: TargetState, *, marks_only: bool = False, scale: float = 1.0) -> str:
    """``history_svg`` of a target's state, drawn again only after the state changed."""
    key = (state.name, marks_only, scale)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is state.history and hit[1] == state.version:
        return hit[2]
    svg = history_svg(state.history, state.thresholds, marks_only=marks_only, scale=scale)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = (state.history, state.version, svg)  # holding the deque: its id stays unique
    return svg
