"""``relayprobe trace``: Microsoft's message trace of a target's latest (or a given) probe."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, TextIO

from probe.graph.trace import TraceQuery, query_trace
from probe.result import Trace, parse_rfc3339, rfc3339
from relayprobe.selection import load_selected

if TYPE_CHECKING:
    from probe.config import Target

#: Exit code per trace status (docs/architecture.md "Exit codes", column trace): delivered is
#: OK; not found yet or still pending is WARNING; failed, quarantined or filtered is CRITICAL;
#: a query that could not run is UNKNOWN.
EXIT = {
    "delivered": 0,
    "expanded": 0,
    "not_found": 1,
    "pending": 1,
    "gettingStatus": 1,
    "failed": 2,
    "quarantined": 2,
    "filteredAsSpam": 2,
    "rate_limited": 3,
    "error": 3,
}


def latest_from_daemon(url: str, target: str, timeout: float = 10.0) -> tuple[str, dt.datetime]:
    """(probe_id, started_at) of ``target``'s latest result on a running daemon's /api/results."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/results", timeout=timeout) as answer:
        data = json.load(answer)
    for result in data.get("results") or []:
        if result.get("target") == target:
            probe_id, started = result.get("probe_id"), parse_rfc3339(result.get("started_at"))
            if probe_id and started is not None:
                return str(probe_id), started
            raise LookupError(f"the daemon's latest result of {target} has no probe id")
    raise LookupError(f"the daemon at {url} has no result for target {target}")


async def run_query(
    target: Target, probe_id: str, since: dt.datetime, until: dt.datetime | None = None
) -> Trace:
    """Message trace by sender, recipient, the probe id in the subject and a time window."""
    query = TraceQuery(
        sender=target.mail_from,
        recipient=target.rcpt_to,
        start=since - dt.timedelta(minutes=5),
        end=until or dt.datetime.now(dt.UTC),
        probe_id=probe_id,
    )
    return await query_trace(target, query, limit=False)  # one query, asked for by a person


def run_trace(
    path: str,
    target_name: str,
    *,
    probe_id: str | None = None,
    daemon: str | None = None,
    hours: float = 48.0,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the trace; exit code per EXIT (3 for usage or config problems)."""
    loaded = load_selected(path, [target_name], err=err)
    if loaded is None:
        return 3
    target = loaded[1][0]
    if not 0 < hours <= 240:
        print("relayprobe trace: --hours: message trace covers at most 10 days per query", file=err)
        return 3
    now = dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=hours)
    if probe_id is None:
        if daemon is None:
            print(
                "relayprobe trace: give --probe-id ID (in the probe's subject, the result's "
                "probe_id) or --daemon URL to trace the target's latest probe",
                file=err,
            )
            return 3
        try:
            probe_id, since = latest_from_daemon(daemon, target.name)
        except (OSError, ValueError, LookupError, urllib.error.URLError) as exc:
            print(f"relayprobe trace: {daemon}: {exc}", file=err)
            return 3
    trace = asyncio.run(run_query(target, probe_id, since))
    if as_json:
        print(
            json.dumps({"target": target.name, "probe_id": probe_id, **trace.to_dict()}), file=out
        )
    else:
        _print(target.name, probe_id, trace, out)
    return EXIT.get(trace.status, 3)


def _print(target: str, probe_id: str, trace: Trace, out: TextIO) -> None:
    print(f"{target} probe {probe_id}: {trace.message}", file=out)
    for e in trace.events:
        line: list[Any] = [rfc3339(e.at) or "-", e.event]
        if e.description:
            line.append(e.description)
        print("  " + "  ".join(str(x) for x in line), file=out)
