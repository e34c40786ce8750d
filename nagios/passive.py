"""Passive mode: read a running relayprobe's last result for one target from GET /api/results."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from typing import Any

from nagios.evaluate import Observation
from nagios.options import Options
from nagios.output import Problem
from probe.result import (
    Arrival,
    AuthVerdict,
    HeaderVerdict,
    ProbeResult,
    Reason,
    SmtpReceipt,
    SpamVerdict,
    Stage,
    Status,
    Timings,
)


class ExporterError(Exception):
    """The exporter could not be read or said something unusable: UNKNOWN with this text."""


def _when(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ExporterError(f"{what} '{value}' is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ExporterError(f"{what} '{value}' has no time zone")
    return when


def result_from_dict(d: dict[str, Any]) -> tuple[ProbeResult, dt.datetime | None]:
    """The inverse of ProbeResult.to_dict (plus "finished_at"); unknown values raise ExporterError."""
    try:
        status, stage, reason = Status(d["status"]), Stage(d["stage"]), Reason(d["reason"])
    except (KeyError, ValueError) as exc:
        raise ExporterError(
            f"result has an unknown or missing status/stage/reason ({exc}): "
            "is check_m365_relay older than the relayprobe daemon?"
        ) from None
    smtp = d.get("smtp")
    timings = {
        k: v for k, v in (d.get("timings") or {}).items() if k in Timings.__dataclass_fields__
    }
    auth = {k: v for k, v in (d.get("auth") or {}).items() if k in AuthVerdict.__dataclass_fields__}
    spam = {k: v for k, v in (d.get("spam") or {}).items() if k in SpamVerdict.__dataclass_fields__}
    arrival = d.get("arrival") or {}
    result = ProbeResult(
        target=str(d.get("target")),
        status=status,
        stage=stage,
        reason=reason,
        message=str(d.get("message") or ""),
        started_at=_when(d.get("started_at"), "started_at") or dt.datetime.now(dt.UTC),
        remedy=d.get("remedy"),
        timings=Timings(**timings),
        smtp=SmtpReceipt(
            host=smtp.get("host") or "?",
            port=smtp.get("port") or 0,
            tls_version=smtp.get("tls_version"),
            cipher=smtp.get("cipher"),
            cert_not_after=_when(smtp.get("cert_not_after"), "cert_not_after"),
            reply_code=smtp.get("reply_code"),
            reply=smtp.get("reply"),
        )
        if smtp
        else None,
        arrival=Arrival(
            folder=arrival.get("folder"),
            placement=arrival.get("placement") or "missing",
            late=bool(arrival.get("late")),
        ),
        verdict=HeaderVerdict(auth=AuthVerdict(**auth), spam=SpamVerdict(**spam)),
        probe_id=d.get("probe_id"),
    )
    finished = _when(d.get("finished_at"), "finished_at")
    if finished is None and result.timings.total_seconds is not None:
        finished = result.started_at + dt.timedelta(seconds=result.timings.total_seconds)
    return result, finished or result.started_at


def _secret(opts: Options) -> str | None:
    if opts.exporter_password_file:
        with open(opts.exporter_password_file, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(opts.exporter_password_env)


def fetch(opts: Options, timeout: float) -> Observation | Problem:
    """GET <exporter>/api/results and pick --target; failures to read are UNKNOWN problems."""
    import urllib.error
    import urllib.request

    url = opts.exporter.rstrip("/") + "/api/results"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
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
            result, finished = result_from_dict(item)
            return Observation(result, finished, url)
    known = ", ".join(str(n) for n in names) or "none yet"
    return Problem(
        "unknown",
        f"no result for target '{opts.target}' at {url}",
        (f"\\_[UNKNOWN] targets with results: {known}; check --target, or wait for the first run",),
    )
