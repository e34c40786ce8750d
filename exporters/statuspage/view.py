"""What the status page says about a target: its state, where it sorts, and the summary."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporters.store import TargetState, was_sent
from probe import AUTH_METHODS, ProbeResult, Status

#: Display order of the states in the summary, worst first ("worst wins": Status.severity).
STATES = tuple(sorted((s.value for s in Status), key=lambda v: -Status(v).severity))


@dataclass(frozen=True)
class TargetView:
    """One target as the page shows it."""

    state: TargetState
    next_run: dt.datetime | None

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def last(self) -> ProbeResult | None:
        return self.state.last

    @property
    def key(self) -> str:
        """ok / warning / critical / unknown; a target without a run yet is unknown (as in
        relayprobe_status)."""
        return self.last.status.value if self.last is not None else Status.UNKNOWN.value

    @property
    def label(self) -> str:
        return self.key.upper()

    @property
    def severity(self) -> int:
        return Status(self.key).severity

    @property
    def failing(self) -> bool:
        """The last run failed (critical or unknown); a warning is a success (docs/architecture)."""
        return self.last is not None and not self.last.success


def views(
    states: Iterable[TargetState], next_run: Callable[[str], dt.datetime | None]
) -> list[TargetView]:
    """Every target, worst state first, then by name."""
    out = [TargetView(state, next_run(state.name)) for state in states]
    return sorted(out, key=lambda v: (-v.severity, v.name))


@dataclass(frozen=True)
class Summary:
    total: int
    counts: dict[str, int]  # state -> targets in it, every state present
    failing: int
    warnings: int
    pending: int  # targets without a run yet
    worst: str
    newest: dt.datetime | None  # when the newest result finished

    @property
    def headline(self) -> str:
        if not self.total:
            return "no targets configured"
        if self.failing:
            return f"{self.failing} of {self.total} failing"
        if self.warnings:
            n = self.warnings
            return f"{n} of {self.total} with {'a warning' if n == 1 else 'warnings'}"
        if self.pending:
            return f"{self.pending} of {self.total} not run yet"
        return f"all {self.total} OK"


def summarize(targets: list[TargetView]) -> Summary:
    counts = dict.fromkeys(STATES, 0)
    for v in targets:
        counts[v.key] += 1
    finished = [v.state.finished_at for v in targets if v.state.finished_at is not None]
    worst = max((v.key for v in targets), key=lambda k: Status(k).severity, default="ok")
    return Summary(
        total=len(targets),
        counts=counts,
        failing=sum(v.failing for v in targets),
        warnings=counts["warning"],
        pending=sum(v.last is None for v in targets),
        worst=worst,
        newest=max(finished, default=None),
    )


# -- result fields in words ---------------------------------------------------------------------
def placement(result: ProbeResult) -> str:
    """Where the probe landed: ``not sent`` when the relay never accepted it (no SMTP receipt)."""
    if not was_sent(result):
        return "not sent"
    if result.arrival.placement == "missing":
        return "not found"
    folder = result.arrival.folder
    return result.arrival.placement + (f" ({folder})" if folder else "")


def auth_line(result: ProbeResult) -> str:
    """``spf=pass dkim=pass dmarc=pass`` of what the receiver stamped; ``""`` if nothing."""
    a = result.verdict.auth
    return " ".join(f"{m}={getattr(a, m)}" for m in AUTH_METHODS if getattr(a, m))


def ordinal_failures(n: int) -> str:
    return f"{n} failure{'s' if n != 1 else ''} in a row"
