"""Passive mode: read a running relayprobe's last result for one target from GET /api/results."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from typing import Any

from nagios.contexts import Observation
from nagios.options import Options
from nagios.output import Problem
from probe import ProbeResult, ResultError, parse_rfc3339


class ExporterError(Exception):
    """The exporter could not be read or said something unusable: UNKNOWN with this text."""


def _observation(item: dict[str, Any], url: str) -> Observation:
    """One /api/results item: its result and when it finished; ExporterError if it is unreadable."""
    try:
        result = ProbeResult.from_dict(item)
    except ResultError as exc:
        if exc.field in ("status", "stage", "reason"):
            raise ExporterError(
                f"result has an unknown or missing status/stage/reason ({exc}): "
                "is check_m365_relay older than the relayprobe daemon?"
            ) from None
        raise ExporterError(str(exc)) from None
    try:
        finished = parse_rfc3339(item.get("finished_at"))
    except ValueError as exc:
        raise ExporterError(f"finished_at {exc}") from None
    if finished is None and result.timings.total_seconds is not None:
        finished = result.started_at + dt.timedelta(seconds=result.timings.total_seconds)
    return Observation(result, finished or result.started_at, url)


def _secret(opts: Options) -> str | None:
    if opts.exporter_password_file:
        with open(opts.exporter_password_file, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(opts.exporter_password_env)


def fetch(opts: Options, timeout: float) -> Observation | Problem:
    """GET <exporter>/api/results and pick --target; failures to read are UNKNOWN problems."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = opts.exporter.rstrip("/") + "/api/results"
    # Only this target, without its history: the daemon's full answer grows with every target
    # and 60 runs each (docs/exporter.md); older daemons ignore the query and send everything.
    query = urllib.parse.urlencode({"target": opts.target, "history": 0})
    request = urllib.request.Request(f"{url}?{query}", headers={"Accept": "application/json"})
    if opts.exporter_username:
        try:
            password = _secret(opts) or ""
        except OSError as exc:
            return Problem("unknown", f"cannot read --exporter-password-file: {exc.strerror}")
        token = base64.b64encode(f"{opts.exporter_username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = None
    if url.startswith("https://"):
        import ssl

        context = ssl.create_default_context(cafile=opts.exporter_ca_file)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            document = json.load(response)
    except urllib.error.HTTPError as exc:
        return Problem(
            "unknown",
            f"exporter {url} answered HTTP {exc.code} {exc.reason}",
            ("\\_[UNKNOWN] check --from-exporter and the exporter's basic-auth settings",),
        )
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        why = getattr(why, "strerror", None) or why  # "Connection refused", not "[Errno 111] ..."
        return Problem(
            "unknown",
            f"cannot read exporter {url}: {why}",
            ("\\_[UNKNOWN] is relayprobe running and listening there?",),
        )
    except ValueError as exc:
        return Problem("unknown", f"exporter {url} sent invalid JSON: {exc}")
    try:
        return _pick(document, opts, url)
    except ExporterError as exc:
        return Problem("unknown", f"exporter {url}: {exc}")


def _pick(document: Any, opts: Options, url: str) -> Observation | Problem:
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise ExporterError('the document has no "results" list')
    names = [r.get("target") for r in results if isinstance(r, dict)]
    for item in results:
        if isinstance(item, dict) and item.get("target") == opts.target:
            return _observation(item, url)
    known = ", ".join(str(n) for n in names) or "none yet"
    return Problem(
        "unknown",
        f"no result for target '{opts.target}' at {url}",
        (f"\\_[UNKNOWN] targets with results: {known}; check --target, or wait for the first run",),
    )
