"""Typed posture results: one Check per aspect of a domain, and the PostureReport of a domain."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.StrEnum):
    """A check's outcome. ``dns_error``: the DNS could not answer, so nothing is known (it is never
    a posture failure: docs/architecture.md "Decisions")."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    DNS_ERROR = "dns_error"

    @property
    def severity(self) -> int:
        return {"ok": 0, "warning": 1, "dns_error": 2, "critical": 3}[self.value]


@dataclass(frozen=True)
class Check:
    """One posture check: ``name`` (``spf``, ``spf_lookups``, ``dkim:selector1``, ...), its state,
    the record it looked at (``record`` names it, ``value`` is the text seen, None when absent),
    one line saying what was found and, unless ok, one line saying what to do."""

    name: str
    state: State
    message: str
    remedy: str | None = None
    record: str | None = None
    value: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "state": self.state.value,
            "message": self.message,
            "remedy": self.remedy,
            "record": self.record,
            "value": self.value,
            "details": self.details,
        }


@dataclass(frozen=True)
class PostureReport:
    """Every check of one domain, from one DNS server at one time."""

    domain: str
    dns_server: str
    checked_at: dt.datetime
    checks: tuple[Check, ...]

    @property
    def state(self) -> State:
        """The worst state of any check (ok when there is none)."""
        return max((c.state for c in self.checks), key=lambda s: s.severity, default=State.OK)

    def records(self) -> dict[str, str | None]:
        """Each DNS record looked at (by record name) and its value, for change detection."""
        out: dict[str, str | None] = {}
        for c in self.checks:
            if c.record and c.state is not State.DNS_ERROR:
                out.setdefault(c.record, c.value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "dns_server": self.dns_server,
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
            "state": self.state.value,
            "checks": [c.to_dict() for c in self.checks],
            "records": self.records(),
        }
