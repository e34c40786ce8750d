"""``relayprobe once``: run one probe per selected target now, print a table or JSON, exit like Nagios."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from probe.result import ProbeResult, Status
from probe.roundtrip import run_probe
from relayprobe.selection import load_selected

if TYPE_CHECKING:
    pass


def run_once(
    path: str,
    *,
    targets: Sequence[str] | None,
    as_json: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    loaded = load_selected(path, targets, err=err)
    if loaded is None:
        return 3
    config, selected = loaded
    results = asyncio.run(_run_all(config, selected))
    if as_json:
        json.dump({"results": [r.to_dict() for r in results]}, out, indent=2)
        out.write("\n")
    else:
        out.write(format_results(results))
    return worst(results).exit_code


async def _run_all(config, selected) -> list[ProbeResult]:  # type: ignore[no-untyped-def]
    # Targets run one after another: several targets often share a sending mailbox, and
    # Microsoft allows only three concurrent SMTP connections per mailbox.
    return [await run_probe(config, target) for target in selected]


def worst(results: Sequence[ProbeResult]) -> Status:
    return max((r.status for r in results), key=lambda s: s.severity, default=Status.UNKNOWN)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def format_results(results: Sequence[ProbeResult]) -> str:
    """A readable block per result: status line, stage timings, verdict, placement."""
    lines: list[str] = []
    for r in results:
        lines.append(f"{r.target}: {r.status.value.upper()} ({r.stage.value}, {r.reason.value})")
        lines.append(f"  {r.message}")
        if r.remedy:
            lines.append(f"  what to do: {r.remedy}")
        t = r.timings
        phases = [*t.smtp_phases(), ("delivery", t.delivery_seconds), ("total", t.total_seconds)]
        lines.append("  timings   " + " ".join(f"{name} {_seconds(v)}" for name, v in phases))
        if r.smtp is not None:
            s = r.smtp
            lines.append(
                f"  relay     {s.host}:{s.port} {s.tls_version or 'no TLS'} {s.cipher or ''}".rstrip()
            )
            lines.append(f"  reply     {s.reply_code} {s.reply}")
        a, sp = r.verdict.auth, r.verdict.spam
        lines.append(
            f"  verdict   spf={a.spf} dkim={a.dkim} dmarc={a.dmarc} compauth={a.compauth} "
            f"scl={sp.scl} sfv={sp.sfv} [{a.source or 'no auth header'}]"
        )
        placement = r.arrival.placement
        folder = f" ({r.arrival.folder})" if r.arrival.folder else ""
        late = f", {r.arrival.late_count} late probe(s) cleaned" if r.arrival.late_count else ""
        lines.append(f"  placement {placement}{folder}{late}")
        lines.append("")
    return "\n".join(lines)
