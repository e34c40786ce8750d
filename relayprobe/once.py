"""``relayprobe once``: run one probe per selected target now, print a table or JSON, exit like Nagios."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from probe.config import ConfigError, load_config
from probe.result import AUTH_METHODS, ProbeResult, Status
from probe.roundtrip import run_probe
from relayprobe.selection import load_selected
from relayprobe.validate import dump_json, problems_json

if TYPE_CHECKING:
    from probe.config import Config, Target


def run_once(
    path: str,
    *,
    targets: Sequence[str] | None,
    as_json: bool,
    quiet: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    if as_json:
        loaded = _load_for_json(path, targets, out=out, err=err)
    else:
        loaded = load_selected(path, targets, err=err)
    if loaded is None:
        return 3
    config, selected = loaded
    progress = Progress(err) if not quiet and err.isatty() else None
    results = asyncio.run(_run_all(config, selected, progress))
    if as_json:
        dump_json({"results": [r.to_dict() for r in results]}, out)
    else:
        out.write(format_results(results))
    return worst(results).exit_code


def _load_for_json(
    path: str, names: Sequence[str] | None, *, out: TextIO, err: TextIO
) -> tuple[Config, list[Target]] | None:
    """load_selected for --json: a bad config is a JSON document on stdout, so a script that
    parses the output learns what is wrong instead of finding nothing to parse."""
    config = None
    try:
        config = load_config(path)
        selected = [config.target(n) for n in names] if names else list(config.targets)
    except ConfigError as exc:
        # An unknown --target fails after loading: the config's own warnings still apply.
        warnings = exc.warnings if config is None else config.warnings
        dump_json({"results": [], **problems_json(exc.errors, warnings, exc.file)}, out)
        return None
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    return config, selected


class Progress:
    """One line on a terminal's stderr while a probe runs: target, step, elapsed and deadline.

    Redrawn in place twice a second and erased when the probe ends, so the results printed on
    stdout are all that stays; never used when stderr is not a terminal (logs, pipes, cron).
    """

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.target, self.step_name, self.started, self.deadline = "", "", 0.0, 0.0

    def begin(self, target: Target) -> None:
        self.target, self.step_name = target.name, "starting"
        self.started, self.deadline = time.monotonic(), target.timeout

    def step(self, name: str) -> None:
        self.step_name = name
        self.draw()

    def draw(self) -> None:
        elapsed = time.monotonic() - self.started
        line = f"{self.target}: {self.step_name}, {elapsed:.0f} s (deadline {self.deadline:g} s)"
        self.err.write(f"\r\x1b[K{line}")
        self.err.flush()

    def end(self) -> None:
        self.err.write("\r\x1b[K")
        self.err.flush()

    async def ticking(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.draw()


async def _run_all(
    config: Config, selected: Sequence[Target], progress: Progress | None = None
) -> list[ProbeResult]:
    # Targets run one after another: several targets often share a sending mailbox, and
    # Microsoft allows only three concurrent SMTP connections per mailbox.
    results = []
    for target in selected:
        if progress is None:
            results.append(await run_probe(config, target))
            continue
        progress.begin(target)
        ticker = asyncio.create_task(progress.ticking())
        try:
            results.append(await run_probe(config, target, on_step=progress.step))
        finally:
            ticker.cancel()
            progress.end()
    return results


def worst(results: Sequence[ProbeResult]) -> Status:
    return max((r.status for r in results), key=lambda s: s.severity, default=Status.UNKNOWN)


def _shown(value: object) -> str:
    """A verdict value for people: "-" where the header did not say (never Python's None)."""
    return "-" if value is None else str(value)


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
            "  verdict   "
            + " ".join(f"{m}={getattr(a, m) or '-'}" for m in AUTH_METHODS)
            + f" scl={_shown(sp.scl)} sfv={sp.sfv or '-'} [{a.source or 'no auth header'}]"
        )
        placement = r.arrival.placement
        folder = f" ({r.arrival.folder})" if r.arrival.folder else ""
        late = f", {r.arrival.late_count} late probe(s) cleaned" if r.arrival.late_count else ""
        lines.append(f"  placement {placement}{folder}{late}")
        lines.append("")
    return "\n".join(lines)
