"""Probe scheduling: one APScheduler job per target, shared mailbox watches, send limits, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporters.limits import SendGate
from exporters.shards import Shard
from exporters.store import ResultStore, TargetSpec, client_cert_not_after
from probe import (
    CONFIGURATION_REASONS,
    Config,
    Found,
    MailboxWatch,
    ProbeFailure,
    ProbeResult,
    Target,
    configured_checks,
    new_watch,
    run_probe,
)

#: smtp_rejected runs in a row after which the target backs off too.
PERSISTENT_REJECTIONS = 3
#: Seconds of first-run spread per target beyond the first stagger_spread (docs/exporter.md).
STAGGER_PER_TARGET = 0.5

log = logging.getLogger("relayprobe.scheduler")


def target_spec(target: Target) -> TargetSpec:
    """What the metrics export of ``target``'s configuration: thresholds, configured checks, how
    each side authenticates, and the client certificate's expiry (read now: at start-up and at
    every reload)."""
    th = target.thresholds
    levels = tuple(
        (lv, v) for lv, v in (("warning", th.warning), ("critical", th.critical)) if v is not None
    )
    smtp_auth = target.smtp.auth  # None: no SMTP AUTH (direct_send, connector)
    auth = (
        ("smtp", smtp_auth.method if smtp_auth is not None else "none"),
        ("imap", target.mailbox.auth.method),
    )
    cert_file, not_after = target.smtp.client_cert_file, None
    if cert_file is not None:
        try:
            not_after = client_cert_not_after(cert_file)
        except (OSError, ValueError) as exc:  # the probe reports it as tls_failed at its run
            log.warning(
                "cannot read the expiry of smtp.client_cert_file %s: %s",
                cert_file,
                exc,
                extra={"target": target.name},
            )
    return TargetSpec(
        target.name,
        target.interval,
        levels,
        configured_checks(target.expect, target.thresholds),
        mode=target.mode,
        cloud=target.cloud,
        auth=auth,
        client_cert=cert_file is not None,
        client_cert_not_after=not_after,
    )


class Busy(Exception):
    """An on-demand run was refused for now (HTTP 429); the message says why."""


@dataclass
class WatchEntry:
    """A mailbox watch shared by every target that delivers into the same mailbox and folders."""

    spec: tuple[object, ...]  # what the watch was built from; a reload that changes it rebuilds it
    watch: MailboxWatch | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _mailbox_key(t: Target) -> tuple[object, ...]:
    m = t.mailbox
    return (m.host, m.port, m.auth.username, m.folder, tuple(t.junk_folders))


def _sender_key(t: Target) -> tuple[str, int, str]:
    who = t.smtp.auth.username if t.smtp.auth is not None else t.mail_from
    return (t.smtp.host, t.smtp.port, who)


class Scheduler:
    """Runs every configured target on its interval and records the results in the store."""

    def __init__(
        self,
        store: ResultStore,
        *,
        max_concurrent_smtp: int = 3,
        max_per_minute: int = 30,
        probe_min_gap: float = 30.0,
        stagger_spread: float = 60.0,
        backoff_cap: float = 3600.0,
        shard: Shard | None = None,
    ) -> None:
        self.store = store
        # A shard's tags carry its own run id, so shards sharing a mailbox never take each
        # other's mail; unsharded, None: the daemon's identity (tags without r=).
        self.shard = shard
        self.run_id = shard.run_id if shard is not None else None
        self.config: Config | None = None
        self.limits = (max_concurrent_smtp, max_per_minute)
        self.probe_min_gap, self.stagger_spread, self.backoff_cap = (
            probe_min_gap,
            stagger_spread,
            backoff_cap,
        )
        self._aps = AsyncIOScheduler(timezone=dt.UTC)
        self._aps.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self._gates: dict[tuple[str, int, str], SendGate] = {}
        self._watches: dict[tuple[object, ...], WatchEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._on_demand: dict[str, float] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._queued: set[asyncio.Task[object]] = set()  # probes still waiting for a send slot
        self.running = False
        self.missed = 0  # runs APScheduler skipped (late wake-up or the previous run still busy)

    @property
    def instance(self) -> str:
        """The instance name this daemon shows: the config's, with the shard suffix if sharded."""
        base = self.config.instance if self.config is not None else ""
        return self.shard.instance(base) if self.shard is not None and base else base

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, config: Config) -> None:
        await self.apply(config)
        self._aps.start()
        self.running = True

    async def apply(self, config: Config) -> None:
        """Switch to ``config``: reschedule all jobs (staggered), keep state of kept targets."""
        old, self.config = self.config, config
        self.store.set_targets(target_spec(t) for t in config.targets)
        for job in self._aps.get_jobs():
            job.remove()
        await self._retire_watches(old, config)
        now = dt.datetime.now(dt.UTC)
        count = len(config.targets)
        # A shard may own no target at all (few targets, many shards): nothing to schedule.
        # Many targets spread wider (STAGGER_PER_TARGET each, up to the shortest interval): 500
        # tenants starting within one minute would hold 500 mailbox logins at once, every cycle.
        spread = min(
            [
                max(self.stagger_spread, count * STAGGER_PER_TARGET),
                *(t.interval for t in config.targets),
            ]
        )
        for i, target in enumerate(config.targets):
            # Staggered first runs: N targets spread over the spread instead of one burst.
            start = now + dt.timedelta(seconds=0.05 + i * spread / count)
            self._aps.add_job(
                self._job,
                IntervalTrigger(
                    seconds=target.interval, jitter=target.jitter or None, start_date=start
                ),
                args=[target.name],
                id=target.name,
                name=target.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(target.interval)),
            )
            self._locks.setdefault(target.name, asyncio.Lock())
        log.info("scheduled %d target(s), first runs spread over %.1f s", count, spread)

    async def _retire_watches(self, old: Config | None, new: Config) -> None:
        """Stop watches no longer needed or built from settings the new config changed."""
        same_tag = old is not None and (old.instance, old.tag_secret) == (
            new.instance,
            new.tag_secret,
        )
        wanted = {_mailbox_key(t): self._spec(new, t) for t in new.targets}
        stale = [k for k, e in self._watches.items() if not same_tag or wanted.get(k) != e.spec]
        for key in stale:
            entry = self._watches.pop(key)
            if entry.watch is not None:
                await entry.watch.stop()

    async def shutdown(self, grace: float) -> int:
        """Stop scheduling, give in-flight probes ``grace`` seconds, then abandon them; close IMAP.

        Returns the number of probes abandoned (those still waiting for a send slot included).
        """
        self.running = False
        if self._aps.running:
            # Pause, not shutdown: APScheduler's asyncio executor cancels running jobs on shutdown.
            self._aps.pause()
        queued = len(self._queued)
        for task in list(self._queued):
            task.cancel()  # never started sending: nothing to wait for
        pending: set[asyncio.Task[object]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0)  # let the job wrappers see their probes finish
        if self._aps.running:
            self._aps.shutdown(wait=False)
        for entry in self._watches.values():
            if entry.watch is not None:
                await entry.watch.stop()
        self._watches.clear()
        return len(pending) + queued

    def next_run(self, name: str) -> dt.datetime | None:
        """When ``name`` runs next on its schedule (a backoff included); None if not scheduled."""
        job = self._aps.get_job(name) if self.running else None
        return getattr(job, "next_run_time", None)  # a job not yet started has none

    # -- running probes -----------------------------------------------------------------------
    def _target(self, name: str) -> Target | None:
        if self.config is None:
            return None
        return next((t for t in self.config.targets if t.name == name), None)

    async def _job(self, name: str) -> None:
        target = self._target(name)
        if target is None or not self.running:
            return
        try:
            async with self._locks[name]:
                await self._tracked(self._probe(target))
        except asyncio.CancelledError:
            if self.running:
                raise
            log.warning("probe abandoned at shutdown", extra={"target": name})

    async def run_now(self, name: str) -> ProbeResult:
        """Run a configured target now (``/probe``); KeyError if unknown, Busy when rate-limited."""
        target = self._target(name)
        if target is None:
            raise KeyError(name)
        lock = self._locks[name]
        if lock.locked():
            raise Busy(f"target {name} is being probed right now; its result will be in /metrics")
        since = time.monotonic() - self._on_demand.get(name, -1e9)
        if since < self.probe_min_gap:
            wait = self.probe_min_gap - since
            raise Busy(
                f"target {name} was probed on demand {since:.0f} s ago; retry in {wait:.0f} s"
            )
        if not self._gate(target).available():
            raise Busy(f"the sending mailbox of target {name} is at its SMTP limit; retry later")
        self._on_demand[name] = time.monotonic()
        async with lock:
            return await self._tracked(self._probe(target))

    async def _tracked(self, coro: object) -> ProbeResult:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await task

    def _gate(self, target: Target) -> SendGate:
        key = _sender_key(target)
        if key not in self._gates:
            self._gates[key] = SendGate(*self.limits)
        return self._gates[key]

    async def _probe(self, target: Target) -> ProbeResult:
        assert self.config is not None
        config = self.config
        watch = await self._watch_for(config, target)
        # Without a shared watch (its IMAP login failed), run_probe logs in itself and turns
        # the failure into a result: the same stage, reason and message as a one-off run.
        # run_id: the daemon's identity (None: tags without r=; a shard's own), also for a private
        # watch opened when the shared one is down, so its late mail is still counted
        # (docs/nagios.md).
        result = await run_probe(
            config,
            target,
            watch=watch,
            send_slot=lambda: self._send_slot(target),
            run_id=self.run_id,
        )
        self.store.record(result, dt.datetime.now(dt.UTC))
        self._log(result)
        self._backoff(target, result)
        return result

    @contextlib.asynccontextmanager
    async def _send_slot(self, target: Target) -> AsyncIterator[None]:
        """Room at the sending mailbox, held for the SMTP submission only."""
        task = asyncio.current_task()
        self._queued.add(task)  # type: ignore[arg-type]
        try:  # waiting for room: nothing sent yet, so shutdown cancels it at once
            async with self._gate(target).hold():
                self._queued.discard(task)  # type: ignore[arg-type]
                yield
        finally:
            self._queued.discard(task)  # type: ignore[arg-type]

    def _log(self, r: ProbeResult) -> None:
        total = r.timings.total_seconds
        fields = {
            "target": r.target,
            "stage": r.stage.value,
            "reason": r.reason.value,
            "status": r.status.value,
            "duration_seconds": round(total, 3) if total is not None else None,
        }
        if r.success:
            log.debug("probe succeeded", extra=fields)
        else:
            log.error("probe failed: %s", r.message, extra=fields)

    def _backoff(self, target: Target, result: ProbeResult) -> None:
        state = self.store.get(target.name)
        if state is None:
            return
        # Microsoft throttles senders that keep failing (continuous error throttling, 5.2.25x),
        # so a 5xx that repeats (mailbox full, blocked sender) is backed off like a config error.
        persistent = state.consecutive_rejections >= PERSISTENT_REJECTIONS
        if result.reason not in CONFIGURATION_REASONS and not persistent:
            if state.consecutive_config_failures:
                log.info("backoff ended", extra={"target": target.name})
            self.store.set_backoff(target.name, 0.0, 0)
            return
        n = state.consecutive_config_failures + 1
        delay = min(target.interval * 2**n, max(self.backoff_cap, target.interval))
        self.store.set_backoff(target.name, delay, n)
        job = self._aps.get_job(target.name)
        if job is not None:
            job.modify(next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay))
        kind = "a repeated rejection" if persistent else "a configuration-class failure"
        log.warning(
            "backing off after %s: next run in %.0f s",
            kind,
            delay,
            extra={"target": target.name, "reason": result.reason.value, "consecutive": n},
        )

    # -- shared mailbox watches ---------------------------------------------------------------
    @staticmethod
    def _spec(config: Config, t: Target) -> tuple[object, ...]:
        return (t.mailbox, tuple(t.junk_folders), config.instance, config.tag_secret)

    async def _watch_for(self, config: Config, target: Target) -> MailboxWatch | None:
        key = _mailbox_key(target)
        spec = self._spec(config, target)
        entry = self._watches.get(key)
        if entry is None or entry.spec != spec:
            # Same mailbox and folders but other settings (e.g. another CA file): this one goes alone.
            if entry is not None:
                return None
            entry = self._watches[key] = WatchEntry(spec)
        async with entry.lock:
            if entry.watch is None:
                watch = new_watch(
                    config,
                    target,
                    on_late=lambda found: self._late(entry, found),
                    run_id=self.run_id,
                )
                try:
                    await watch.start()  # logs in and sweeps this instance's stale probe mail
                except ProbeFailure as failure:
                    log.warning(
                        "mailbox watch could not start: %s",
                        failure.message,
                        extra={"target": target.name, "reason": failure.reason.value},
                    )
                    return None  # a failed watch cannot be restarted: the next run builds a new one
                entry.watch = watch
                log.info("mailbox watch started", extra={"folders": ", ".join(watch.folders)})
            return entry.watch

    def _late(self, entry: WatchEntry, found: Found) -> None:
        counted = self.store.record_late(found.tag.target)
        log.info(
            "late probe mail counted and removed" if counted else "stale probe mail removed",
            extra={"target": found.tag.target, "folder": found.folder},
        )
        if entry.watch is not None:
            entry.watch.late.clear()  # counted here; the list would otherwise grow forever

    def _on_missed(self, event: JobExecutionEvent) -> None:
        self.missed += 1
        why = "previous run still busy" if event.code == EVENT_JOB_MAX_INSTANCES else "woke up late"
        log.warning("scheduled run skipped: %s", why, extra={"target": event.job_id})
