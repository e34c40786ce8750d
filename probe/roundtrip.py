"""One probe round trip: log in to the mailbox, send the tagged mail, wait, read the verdict, judge."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from probe.failure import ProbeFailure, local_failure
from probe.graph.trace import TraceQuery, apply_trace, query_trace, wants_trace
from probe.graph.watch import GraphFound, GraphWatch
from probe.imap.watch import MailboxWatch
from probe.imap.watcher import STALE_AFTER, Found
from probe.m365.tokens import TokenProvider, provider_for
from probe.message import build_message, message_id
from probe.result import (
    Arrival,
    ProbeResult,
    Reason,
    Stage,
    Status,
    Timings,
)
from probe.smtp.submission import send_probe
from probe.tag import PROCESS_RUN_ID, Tag, make_tag
from probe.verdict.headers import parse_headers
from probe.verdict.judge import judge

if TYPE_CHECKING:
    from probe.config import Config, Target

log = logging.getLogger("relayprobe.probe")

#: Entered around the SMTP submission only: a scheduler's per-mailbox send limits.
SendSlot = Callable[[], contextlib.AbstractAsyncContextManager[None]]
#: A probe mail a watch saw: over IMAP (probe.imap.watcher.Found) or Graph (GraphFound).
Arrived = Found | GraphFound


class Watch(Protocol):
    """What run_probe and the daemon use of a mailbox watch; MailboxWatch (IMAP) and
    GraphWatch (Microsoft Graph) both provide it (docs/architecture.md "Detection")."""

    run_id: str | None
    folders: list[str]
    late: collections.deque[Any]

    @property
    def cert_not_after(self) -> dt.datetime | None: ...

    def placement(self, folder: str) -> str: ...

    async def start(self) -> None: ...

    async def ready(self) -> None: ...

    def expect(self, tag: Tag, sent_at: float) -> asyncio.Future[Any]: ...

    def forget(self, tag: Tag) -> None: ...

    def outage(self, since: float) -> str | None: ...

    async def stop(self) -> None: ...


def new_watch(
    config: Config,
    target: Target,
    *,
    token_provider: TokenProvider | None = None,
    on_late: Callable[[Arrived], None] | None = None,
    run_id: str | None = None,
) -> Watch:
    """A mailbox watch for ``target``'s inbox and junk folders (not started): over IMAP, or
    over Microsoft Graph for ``mailbox.protocol: graph`` (probe/graph/watch.py).

    ``run_id`` None (the default) makes the instance's long-lived watch, the daemon's: it owns
    probe mail without a run id, its own and any left by older versions. ``run_probe`` opens its
    own watches with the process's run id instead (docs/architecture.md, "Cleanup").
    """
    # Another run's mail is provably stale once no run of this config can still wait for it:
    # twice the longest delivery timeout, and at least an hour (clock skew between hosts).
    stale_after = max(STALE_AFTER, 2 * max(t.timeout for t in config.targets))
    kind = GraphWatch if target.mailbox.protocol == "graph" else MailboxWatch
    return kind(
        target.mailbox,
        target.junk_folders,
        secret=config.tag_secret.get().encode(),
        instance=config.instance,
        token_provider=token_provider or provider_for(target.mailbox.auth),
        on_late=on_late,
        run_id=run_id,
        stale_after=stale_after,
    )


async def run_probe(
    config: Config,
    target: Target,
    *,
    watch: Watch | None = None,
    smtp_token: TokenProvider | None = None,
    imap_token: TokenProvider | None = None,
    send_slot: SendSlot | None = None,
    run_id: str | None = PROCESS_RUN_ID,
    on_step: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Run one full round trip for ``target``; expected failures become the result, never raise.

    ``watch`` lets a long-running caller share one started mailbox watch across runs; without
    it, a watch is opened (IMAP login before sending, so login time is not delivery latency)
    and closed again. ``send_slot`` is held around the SMTP submission alone (not the wait for
    arrival), so per-mailbox send limits do not stretch over slow deliveries.

    The probe's tag carries the watch's run id. ``run_id`` is that of a watch opened here: by
    default this process's (``probe.tag.PROCESS_RUN_ID``), so a daemon, ``once`` runs and Nagios
    checks on one config never take each other's mail; None takes the daemon's identity.
    ``on_step`` hears each step as it starts ("mailbox login", "sending", "waiting for
    delivery", "reading the verdict"), for a progress line.
    """
    step = on_step or (lambda _name: None)
    started_at = dt.datetime.now(dt.UTC)
    # oauth2 targets get an MSAL token source (one token shared by SMTP and IMAP of one app).
    smtp_token = smtp_token or provider_for(target.smtp.auth)
    imap_token = imap_token or provider_for(target.mailbox.auth)
    own_watch = watch is None
    try:
        if watch is None:
            watch = new_watch(config, target, token_provider=imap_token, run_id=run_id)
            step("mailbox login")
            await watch.start()
        result = await _round_trip(config, target, watch, started_at, smtp_token, send_slot, step)
        result.mailbox_cert_not_after = watch.cert_not_after
        return result
    except ProbeFailure as failure:
        result = _failed(target, started_at, failure)
        result.mailbox_cert_not_after = watch.cert_not_after if watch is not None else None
        return result
    except Exception as exc:  # a bug, not an expected failure: still a result, with the type named
        local = local_failure(Stage.CONFIG, exc, "running the probe")
        if (
            local is not None
        ):  # this host ran out of descriptors or memory: not a bug, not the relay
            return _failed(target, started_at, local)
        log.exception("probe of target %s crashed", target.name)
        return ProbeResult(
            target=target.name,
            status=Status.UNKNOWN,
            stage=Stage.CONFIG,
            reason=Reason.INTERNAL_ERROR,
            message=f"internal error ({type(exc).__name__}); see the log and report it",
            started_at=started_at,
        )
    finally:
        if own_watch and watch is not None:
            try:
                await watch.stop()
            except Exception as exc:  # closing must never replace the result it follows
                log.warning("closing the mailbox watch of %s failed: %s", target.name, exc)


async def _round_trip(
    config: Config,
    target: Target,
    watch: Watch,
    started_at: dt.datetime,
    smtp_token: TokenProvider | None,
    send_slot: SendSlot | None,
    step: Callable[[str], None],
) -> ProbeResult:
    await watch.ready()  # logged in before anything is sent (a shared watch may have logged out)
    late_at_start = sum(1 for f in watch.late if f.tag.target == target.name)
    tag = make_tag(
        config.tag_secret.get().encode(),
        instance=config.instance,
        target=target.name,
        run=watch.run_id,  # the watch takes as its own only mail of its run id
    )
    message = build_message(tag=tag, mail_from=target.mail_from, rcpt_to=target.rcpt_to)
    # What finds this probe in Microsoft's message trace if it goes wrong (probe/graph/trace.py).
    query = TraceQuery(
        sender=target.mail_from,
        recipient=target.rcpt_to,
        start=dt.datetime.fromtimestamp(tag.sent_at, dt.UTC) - dt.timedelta(minutes=5),
        end=dt.datetime.now(dt.UTC),  # replaced by the time of the query
        message_id=message_id(tag, target.mail_from),
    )
    async with send_slot() if send_slot else contextlib.nullcontext():
        t0 = time.monotonic()
        arrival = watch.expect(tag, t0)
        try:
            step("sending")
            outcome = await send_probe(
                target.smtp,
                mail_from=target.mail_from,
                rcpt_to=target.rcpt_to,
                message=message,
                token_provider=smtp_token,
            )
        except BaseException as exc:  # a failure, a shutdown or a bug: stop waiting for this tag
            watch.forget(tag)
            if isinstance(exc, ProbeFailure):
                exc.probe_id = tag.probe_id
            raise
    timings = Timings.of_smtp(outcome.phases)
    remaining = max(0.0, target.timeout - (time.monotonic() - t0))
    try:
        step("waiting for delivery")
        found = await asyncio.wait_for(asyncio.shield(arrival), remaining)
    except asyncio.CancelledError:
        watch.forget(tag)
        raise
    except TimeoutError:
        watch.forget(tag)
        timings.total_seconds = time.monotonic() - t0
        where = ", ".join(f'"{f}"' for f in watch.folders)
        if isinstance(watch, GraphWatch) and (lost := watch.lost(t0)) is not None:
            # Graph throttled (429) or failed during the wait: the probe may well have arrived
            # unseen; throttling is never a delivery failure (docs/architecture.md "Reasons").
            reason, what, remedy = lost
            throttled = reason is Reason.GRAPH_THROTTLED
            return ProbeResult(
                target=target.name,
                status=Status.UNKNOWN if throttled else Status.CRITICAL,
                stage=Stage.DELIVER,
                reason=reason,
                message=(
                    f"deliver: the relay accepted the probe ({outcome.receipt.reply_code} "
                    f"{outcome.receipt.reply}) but the mailbox could not be watched during the "
                    f"{target.timeout:g} s wait: {what}"
                ),
                remedy=remedy,
                started_at=started_at,
                timings=timings,
                smtp=outcome.receipt,
                arrival=Arrival(late_count=late_at_start),
                probe_id=tag.probe_id,
            )
        outage = watch.outage(t0)
        if outage is not None:
            # The mailbox could not be watched for part of the wait: the probe may well have
            # arrived unseen, so the relay is not to blame (docs/architecture.md, "Reasons").
            return ProbeResult(
                target=target.name,
                status=Status.CRITICAL,
                stage=Stage.DELIVER,
                reason=Reason.IMAP_FAILED,
                message=(
                    f"deliver: the relay accepted the probe ({outcome.receipt.reply_code} "
                    f"{outcome.receipt.reply}) but the mailbox could not be watched during the "
                    f"{target.timeout:g} s wait: {outage}"
                ),
                remedy=(
                    "the IMAP server was unreachable or dropped the connection while relayprobe "
                    "waited; tried again at the next run (a probe mail that arrived meanwhile is "
                    "found then, counted as late and removed)"
                ),
                started_at=started_at,
                timings=timings,
                smtp=outcome.receipt,
                arrival=Arrival(late_count=late_at_start),
                probe_id=tag.probe_id,
            )
        timed_out = ProbeResult(
            target=target.name,
            status=Status.CRITICAL,
            stage=Stage.DELIVER,
            reason=Reason.DELIVERY_TIMEOUT,
            message=(
                f"deliver: the relay accepted the probe ({outcome.receipt.reply_code} "
                f"{outcome.receipt.reply}) but it was not in {where} of {target.rcpt_to} "
                f"within {target.timeout:g} s"
            ),
            remedy=(
                "look for the message in the relay's queue or Microsoft's message trace "
                "(it may be queued, quarantined or rejected after acceptance); if it arrives "
                "later it is counted as late and removed"
            ),
            started_at=started_at,
            timings=timings,
            smtp=outcome.receipt,
            arrival=Arrival(late_count=late_at_start),
            probe_id=tag.probe_id,
        )
        return await _with_trace(target, timed_out, query, step)
    delivery = max(0.0, found.detected_at - outcome.accepted_at)
    timings.delivery_seconds = delivery
    timings.total_seconds = found.detected_at - t0
    step("reading the verdict")
    verdict = parse_headers(found.headers)
    placement = watch.placement(found.folder)
    verdict_judgement = judge(
        delivery_seconds=delivery,
        placement=placement,
        folder=found.folder,
        verdict=verdict,
        expect=target.expect,
        thresholds=target.thresholds,
    )
    status, reason, stage = verdict_judgement.status, verdict_judgement.reason, Stage.DONE
    message = verdict_judgement.message or (
        f"delivered to {found.folder} in {delivery:.2f} s; "
        + " ".join(f"{m}={getattr(verdict.auth, m) or '-'}" for m in ("spf", "dkim", "dmarc"))
    )
    # A failed SPF/DKIM/DMARC check gets its DNS cause, from the IP and d=/s= the receiver saw
    # (probe/posture/explain.py; imported here: checkdmarc is slow to import and rarely needed).
    from probe.posture.explain import explain_failed_auth

    explained = await explain_failed_auth(found.headers, verdict_judgement.checks, verdict, target)
    if explained.causes:
        message = f"{message}; {'; '.join(explained.causes)}"
    if found.cleanup_error and status is Status.OK:
        status, reason, stage = Status.WARNING, Reason.CLEANUP_FAILED, Stage.CLEANUP
        message = f"cleanup: could not delete the probe mail ({found.cleanup_error})"
    delivered = ProbeResult(
        target=target.name,
        status=status,
        stage=stage,
        reason=reason,
        message=message,
        started_at=started_at,
        timings=timings,
        smtp=outcome.receipt,
        arrival=Arrival(folder=found.folder, placement=placement, late_count=late_at_start),
        verdict=verdict,
        probe_id=tag.probe_id,
        checks=list(explained.checks),
        remedy=explained.remedy,
    )
    return await _with_trace(target, delivered, query, step)


async def _with_trace(
    target: Target, result: ProbeResult, query: TraceQuery, step: Callable[[str], None]
) -> ProbeResult:
    """With ``trace.enabled``: Microsoft's message trace for a probe that timed out, was junked
    or came late, in the result and, where it says more, in its reason (probe/graph/trace.py)."""
    if not (target.trace.enabled and wants_trace(result)):
        return result
    step("asking Microsoft's message trace")
    now = dt.datetime.now(dt.UTC)
    trace = await query_trace(target, dataclasses.replace(query, end=now))
    return apply_trace(result, trace)


def _failed(target: Target, started_at: dt.datetime, failure: ProbeFailure) -> ProbeResult:
    timings = Timings.of_smtp(failure.phases)
    # A configuration-class or relay failure is CRITICAL: the path an application uses is broken.
    # A local problem (out of descriptors, an unreadable file) says nothing about the relay: UNKNOWN.
    # Graph throttling is not a delivery failure either: the mailbox could not be asked.
    local = failure.reason in (Reason.INTERNAL_ERROR, Reason.GRAPH_THROTTLED)
    return ProbeResult(
        target=target.name,
        status=Status.UNKNOWN if local else Status.CRITICAL,
        stage=failure.stage,
        reason=failure.reason,
        message=failure.message,
        remedy=failure.remedy,
        started_at=started_at,
        timings=timings,
        smtp=failure.receipt,
        probe_id=failure.probe_id,
    )
