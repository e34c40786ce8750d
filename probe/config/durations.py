"""Duration syntax for the config: plain seconds (300, "300") or units ("30s", "5m", "1h30m", "250ms")."""

from __future__ import annotations

import math
import re

# Prometheus-style units, largest first; a duration lists each unit at most once, in this order.
_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = list(_UNITS)
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_HINT = 'use seconds (300) or units like "30s", "5m", "1h30m", "250ms"'


def _invalid(v: object, why: str = _HINT) -> ValueError:
    shown = f'"{v}"' if isinstance(v, str) else str(v).lower()
    return ValueError(f"invalid duration {shown}: {why}")


def parse_duration(v: str | int | float) -> float:
    """Return the duration ``v`` in seconds; raise ValueError naming ``v`` if it is not one."""
    # YAML turns `yes`/`true` into bool, which is an int subclass: never a duration.
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise _invalid(v)
    if not isinstance(v, str):
        if not math.isfinite(v):
            raise _invalid(v)
        if v < 0:
            raise _invalid(v, "must not be negative")
        return float(v)
    s = v.strip()
    if s.startswith("-") and _is_duration(s[1:]):
        # "-5s" is a duration with a sign, not a typo: say what is wrong with it, not the syntax.
        raise _invalid(v, "must not be negative")
    if _NUMBER.fullmatch(s):
        return float(s)
    total, pos, last = 0.0, 0, -1
    for m in _PART.finditer(s):
        if m.start() != pos:
            raise _invalid(v)
        rank = _ORDER.index(m.group(2))
        if rank <= last:
            raise _invalid(v, "list units largest first, each once (like 1h30m)")
        total, pos, last = total + float(m.group(1)) * _UNITS[m.group(2)], m.end(), rank
    if pos == 0 or pos != len(s):
        raise _invalid(v)
    return total


def _is_duration(s: str) -> bool:
    try:
        parse_duration(s)
    except ValueError:
        return False
    return True


def format_duration(seconds: float) -> str:
    """Render seconds the way the config accepts them: 90 -> "1m30s", 0.25 -> "250ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000):d}ms"
    out, rest = [], seconds
    for unit in ("d", "h", "m"):
        n, rest = divmod(rest, _UNITS[unit])
        if n:
            out.append(f"{int(n)}{unit}")
    if rest or not out:
        out.append(f"{rest:g}s")
    return "".join(out)
