"""The daemon's posture checks: each sending domain on its own interval, record values remembered,
changes timestamped (docs/exporter.md#posture)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from probe import Config, PostureReport, PostureSettings, check_domain, domain_of, settings_for

log = logging.getLogger("relayprobe.posture")


@dataclass
class RecordState:
    """One DNS record of a domain as last seen, and since when it has that value.

    The first observation sets the baseline (``changed_at`` None: not a change); a later
    different value, a record appearing or vanishing, sets ``changed_at``. A lookup that failed
    (DNS trouble) keeps the previous value: an outage is not a change."""

    value: str | None
    first_seen: dt.datetime
    changed_at: dt.datetime | None = None
    previous: str | None = None


@dataclass
class DomainPosture:
    """One sending domain: its settings, the targets sending as it, its last report and records."""

    domain: str
    settings: PostureSettings
    targets: tuple[str, ...]
    report: PostureReport | None = None
    records: dict[str, RecordState] = field(default_factory=dict)
    next_run: dt.datetime | None = None

    def observe(self, report: PostureReport) -> list[str]:
        """Take a new report; returns the names of the records whose value changed."""
        changed = []
        for name, value in report.records().items():
            old = self.records.get(name)
            if old is None:
                self.records[name] = RecordState(value, report.checked_at)
            elif old.value != value:
                old.previous, old.value, old.changed_at = old.value, value, report.checked_at
                changed.append(name)
        self.report = report
        return changed

    def to_dict(self) -> dict[str, Any]:
        def ts(when: dt.datetime | None) -> str | None:
            return when.isoformat().replace("+00:00", "Z") if when else None

        return {
            "domain": self.domain,
            "targets": list(self.targets),
            "interval_seconds": self.settings.interval,
            "next_run": ts(self.next_run),
            "report": self.report.to_dict() if self.report else None,
            "records": {
                name: {
                    "value": r.value,
                    "first_seen": ts(r.first_seen),
                    "changed_at": ts(r.changed_at),
                    "previous": r.previous,
                }
                for name, r in sorted(self.records.items())
            },
        }


def plan(config: Config) -> dict[str, tuple[PostureSettings, tuple[str, ...]]]:
    """Distinct sending domains of the targets with ``posture.enabled``: the settings of the first
    such target (in config order) and every target that sends as the domain. ``mail_from`` is
    also the probe's header From (probe/message.py), so it is the one domain per target."""
    out: dict[str, tuple[PostureSettings, tuple[str, ...]]] = {}
    for target in config.targets:
        if not target.posture.enabled:
            continue
        domain = domain_of(target.mail_from)
        if domain in out:
            settings, names = out[domain]
            out[domain] = (settings, (*names, target.name))
        else:
            out[domain] = (settings_for(target), (target.name,))
    return out


class PostureMonitor:
    """Runs each domain's checks in a thread (DNS blocks) on its own interval, one task each."""

    #: Threads for the checks: their own, so slow DNS never holds the default executor that
    #: mailbox logins and token fetches use; domains beyond it wait their turn.
    THREADS = 2

    def __init__(self, *, check: Callable[..., PostureReport] = check_domain) -> None:
        self.domains: dict[str, DomainPosture] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._check = check
        self._executor: ThreadPoolExecutor | None = None

    def views(self) -> list[DomainPosture]:
        return [self.domains[d] for d in sorted(self.domains)]

    async def apply(self, config: Config) -> None:
        """Start, restart (settings changed) or stop each domain's task; known values are kept."""
        wanted = plan(config)
        for domain in set(self.domains) - set(wanted):
            await self._cancel(domain)
            del self.domains[domain]
        for domain, (settings, targets) in wanted.items():
            current = self.domains.get(domain)
            if current is not None and current.settings == settings:
                current.targets = targets
                continue
            await self._cancel(domain)
            if current is None:
                current = self.domains[domain] = DomainPosture(domain, settings, targets)
            current.settings, current.targets = settings, targets
            self._tasks[domain] = asyncio.create_task(self._loop(current), name=f"posture {domain}")

    async def stop(self) -> None:
        for domain in list(self._tasks):
            await self._cancel(domain)
        if self._executor is not None:
            # A check still waiting on DNS ends within its timeouts; nobody waits for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _cancel(self, domain: str) -> None:
        task = self._tasks.pop(domain, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_once(self, entry: DomainPosture) -> list[str]:
        """Check one domain now; the names of the records that changed."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.THREADS, thread_name_prefix="posture")
        loop = asyncio.get_running_loop()
        report = await loop.run_in_executor(
            self._executor, self._check, entry.domain, entry.settings
        )
        changed = entry.observe(report)
        for name in changed:
            log.info(
                "DNS record changed",
                extra={
                    "domain": entry.domain,
                    "record": name,
                    "value": entry.records[name].value,
                    "previous": entry.records[name].previous,
                },
            )
        return changed

    async def _loop(self, entry: DomainPosture) -> None:
        while True:
            try:
                await self.run_once(entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one check must not end the domain's schedule
                log.exception("posture check of %s failed", entry.domain)
            entry.next_run = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=entry.settings.interval)
            await asyncio.sleep(entry.settings.interval)

    def document(self) -> dict[str, Any]:
        """``/api/posture``: every monitored domain, its last report and its records' history."""
        return {"domains": [d.to_dict() for d in self.views()]}
