"""Presentation: (observation or problem, options) -> plugin text and exit code, a pure function."""

from __future__ import annotations

import datetime as dt
import io
import logging
from dataclasses import dataclass

from nagios.argspec import USAGE
from nagios.options import Options
from probe import AUTH_METHODS, CheckResult, ProbeResult, Reason, Stage, Status, rfc3339

PREFIX = "M365 RELAY"


@dataclass(frozen=True)
class Problem:
    """The plugin could not produce a probe result: bad options, its own timeout, exporter down."""

    state: str  # ok | warning | critical | unknown
    summary: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    text: str
    exit_code: int


def _output() -> object:
    from nagiosplugin.output import Output

    # nagiosplugin's Output strips "|" (a server reply may hold one) and notes that it did;
    # its log channel stays empty because the plugin logs nothing to stdout.
    return Output(logging.StreamHandler(io.StringIO()))


def render_problem(problem: Problem) -> Rendered:
    out = _output()
    out.status = out._screen_chars(
        f"{PREFIX} {problem.state.upper()} - {problem.summary}", "status"
    )
    out.add_longoutput(list(problem.details))
    return Rendered(str(out), Status(problem.state).exit_code)


def usage_problem(message: str) -> Problem:
    return Problem("unknown", f"invalid options: {message}", ("usage: " + USAGE,))


def timeout_problem(timeout: float, state: str, mode: str, deadline: float | None) -> Problem:
    """The plugin's -t watchdog expired (UNKNOWN unless --timeout-state says otherwise)."""
    if mode == "passive":
        hint = "the exporter did not answer in time: check that relayprobe is running and reachable"
    elif deadline is not None:
        hint = (
            f"the round trip may take up to the delivery timeout ({deadline:g}s) plus the SMTP "
            "phases: raise -t above it (and the core's check timeout above -t) or lower the "
            "delivery timeout"
        )
    else:
        hint = "raise -t (and the core's check timeout above it)"
    return Problem(
        state, f"plugin timed out after {timeout:g}s (-t)", (f"\\_[{state.upper()}] {hint}",)
    )


def _line(state: object, text: str) -> str:
    return f"\\_[{str(state).upper()}] {text}"


def _clean(text: str | None) -> str:
    # "|" starts perfdata: a server reply holding one would cut the details short.
    return (text or "").replace("|", "/")


def _aspect_state(
    check: object, names: tuple[str, ...], reasons: frozenset, failed: list[CheckResult] = ()
) -> object:
    """Worst of the plugin's own results for an aspect, the probe's verdict on it and every
    failed check of the result for it (a junked probe can fail SPF and DMARC too)."""
    from nagios.contexts import STATE

    results = check.results
    states = [results[n].state for n in names if n in results]
    if obs_reason(check) in reasons:
        states.append(results["outcome"].state)
    states += [STATE[c.status.value] for c in failed]
    return max(states, default="ok")


def _failed_checks(result: ProbeResult, opts: Options) -> dict[str, list[CheckResult]]:
    """The result's failed checks per aspect line, except where a plugin option decides."""
    covered = {
        "latency": opts.warning is not None or opts.critical is not None,
        "placement": opts.junk_severity is not None,
        "scl": opts.max_scl is not None,
        **dict.fromkeys(AUTH_METHODS, bool(opts.expect)),
    }
    aspects: dict[str, list[CheckResult]] = {"delivery": [], "auth": [], "scl": []}
    for c in result.failed_checks:
        if not covered.get(c.check, False):
            aspect = "auth" if c.check in AUTH_METHODS else c.check
            aspects["delivery" if aspect in ("latency", "placement") else aspect].append(c)
    return aspects


def obs_reason(check: object) -> object:
    return check.results["outcome"].metric.value.reason


def _details(check: object, obs: object, opts: Options, now: dt.datetime | None) -> list[str]:
    from nagios.contexts import arrived, auth_text, seconds

    result = obs.result
    by_name = check.results
    failed = _failed_checks(result, opts)
    lines = []
    t = result.timings
    if result.smtp is not None:
        phases = [f"{label} {seconds(v)}" for label, v in t.smtp_phases() if v is not None]
        failed_here = result.stage in (Stage.CONNECT, Stage.TLS, Stage.AUTH, Stage.SUBMIT)
        state = by_name["outcome"].state if failed_here else "ok"
        text = f"SMTP {result.smtp.host}:{result.smtp.port}: " + (", ".join(phases) or "no reply")
        if failed_here:
            text += f", failed at {result.stage.value}"
        lines.append(_line(state, text))
        if (opts.verbose >= 1 or failed_here) and result.smtp.reply_code is not None:
            reply = f"   reply: {result.smtp.reply_code} {_clean(result.smtp.reply)}"
            lines.append(reply.rstrip())
        if opts.verbose >= 1 and result.smtp.tls_version:
            lines.append(f"   tls: {result.smtp.tls_version} {result.smtp.cipher or ''}".rstrip())
    if arrived(result):
        where = f"{result.arrival.folder} ({result.arrival.placement})"
        after = f" after {seconds(t.delivery_seconds)}" if t.delivery_seconds is not None else ""
        delivery_reasons = frozenset(
            {
                Reason.JUNKED,
                Reason.PLACEMENT_MISMATCH,
                Reason.LATENCY_WARNING,
                Reason.LATENCY_CRITICAL,
            }
        )
        state = _aspect_state(
            check, ("delivery", "placement"), delivery_reasons, failed["delivery"]
        )
        lines.append(_line(state, f"delivery: {where}{after}"))
        auth = result.verdict.auth
        state = _aspect_state(
            check, ("auth",), frozenset({Reason.AUTH_RESULT_MISMATCH}), failed["auth"]
        )
        lines.append(_line(state, f"authentication: {auth_text(auth)}"))
        if opts.verbose >= 2:
            lines.append(
                f"   dmarc action {auth.dmarc_action}, compauth reason "
                f"{auth.compauth_reason}, from {auth.source}"
            )
        spam = result.verdict.spam
        if spam.scl is not None:
            state = _aspect_state(
                check, ("scl",), frozenset({Reason.SPAM_SCORE_HIGH}), failed["scl"]
            )
            lines.append(_line(state, f"spam: SCL {spam.scl}"))
            if opts.verbose >= 2:
                lines.append(f"   BCL {spam.bcl}, SFV {spam.sfv}, CAT {spam.cat}")
    elif result.stage in (Stage.DELIVER, Stage.VERIFY):
        # No SMTP receipt: the mailbox check failed before anything was sent.
        text = (
            "delivery: not found in the watched folders"
            if result.smtp is not None
            else "delivery: mailbox not reachable, nothing was sent"
        )
        lines.append(_line(by_name["outcome"].state, text))
    if obs.finished_at is not None and now is not None:
        age = int(max(0.0, (now - obs.finished_at).total_seconds()))
        lines.append(_line("ok", f"result: {age}s old (max {opts.max_age:g}s) from {obs.source}"))
    if result.status.value != "ok" or opts.verbose >= 1:
        lines.append(f"message: {_clean(result.message)}")
    if result.remedy and result.status.value != "ok":
        lines.append(f"remedy: {_clean(result.remedy)}")
    if result.trace is not None:  # Microsoft's message trace (trace.enabled; docs/nagios.md)
        lines.append(f"trace: {_clean(result.trace.message)}")
        for event in result.trace.events:
            at = _iso(event.at) if event.at is not None else "-"
            lines.append(f"   {at} {event.event}: {_clean(event.description)}".rstrip(": "))
    if opts.verbose >= 1:
        probe = f"probe {result.probe_id} " if result.probe_id else "probe "
        lines.append(
            f"{probe}started {_iso(result.started_at)}, "
            f"stage {result.stage.value}, reason {result.reason.value}"
        )
    return lines


_PERF_ORDER = ("delivery", "smtp_connect", "smtp_tls", "smtp_auth", "smtp_submit", "total", "scl")


def _perf_key(item: str) -> int:
    label = item.split("=", 1)[0].strip("'")
    return _PERF_ORDER.index(label) if label in _PERF_ORDER else len(_PERF_ORDER)


def _stale(obs: object, opts: Options, now: dt.datetime) -> Rendered | None:
    age = (now - obs.finished_at).total_seconds()
    if age <= opts.max_age:
        return None
    last = obs.result
    out = _output()
    out.status = (
        out._screen_chars(
            f"{PREFIX} {opts.stale_state.upper()} - {last.target}: last result is {int(age)}s old "
            f"(max {opts.max_age:g}s)",
            "status",
        )
        + f" | age={int(age)}s;;;0"
    )
    out.add_longoutput(
        [
            _line(opts.stale_state, f"result: from {obs.source}, finished {_iso(obs.finished_at)}"),
            f"last result (not evaluated): {last.status.value} {last.reason.value}: {last.message}",
            "remedy: check that relayprobe is running and probing this target "
            "(its log and /-/healthy); --max-age must exceed the probe interval plus its timeout",
        ]
    )
    return Rendered(str(out), Status(opts.stale_state).exit_code)


def _iso(when: dt.datetime) -> str:

    return rfc3339(when) or "?"


def render(obs: object, opts: Options, now: dt.datetime | None = None) -> Rendered:
    """Render an Observation (probe result, maybe from the exporter) or a Problem."""
    if isinstance(obs, Problem):
        return render_problem(obs)
    if obs.finished_at is not None and now is not None:
        stale = _stale(obs, opts, now)
        if stale is not None:
            return stale
    from nagios.contexts import arrived, build_check, seconds

    check = build_check(obs, opts, now)
    check()
    check.perfdata = sorted(check.perfdata, key=_perf_key)
    result = obs.result
    state = check.state
    if state.code == 0:
        delivery = result.timings.delivery_seconds
        took = f" in {seconds(delivery)}" if delivery is not None else ""
        summary = f"{result.target}: delivered to {result.arrival.folder}{took}"
        if not arrived(result):  # an OK result without arrival: trust the probe's own words
            summary = f"{result.target}: {result.reason.value}"
    else:
        summary = f"{result.target}: {check.results.first_significant.hint}"
    out = _output()
    out.status = out._screen_chars(f"{PREFIX} {str(state).upper()} - {summary}", "status")
    perf = out.format_perfdata(check)
    if perf:
        out.status += " " + perf
    out.add_longoutput(_details(check, obs, opts, now))
    return Rendered(str(out), state.code)
