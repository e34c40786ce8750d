"""The HTTP surface (aiohttp): landing/status page, /metrics, /probe, /api/results, health, reload."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import html
import logging
from typing import Any, Protocol

from aiohttp import http_exceptions, web

# 0.0.4 text: what Prometheus 2.x (Debian 12 ships 2.42) negotiates; our names need no escaping.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

from exporters.limits import Listener
from exporters.metrics import CachedExposition, exposition
from exporters.scheduler import Busy, Scheduler
from exporters.store import ResultStore
from exporters.webconfig import WebConfig
from probe import AUTH_METHODS, rfc3339


class Served(Protocol):
    """What the HTTP surface reads from the daemon (exporters/daemon.py) and asks it to do."""

    web: WebConfig
    store: ResultStore
    scheduler: Scheduler
    exposition: CachedExposition
    version: str
    reload_ok: bool
    reload_errors: list[str]

    async def reload(self) -> list[str]: ...


DAEMON = web.AppKey("daemon", object)
LISTENER = web.AppKey("listener", Listener)


def build_app(daemon: Served, listener: Listener | None = None) -> web.Application:
    """The routes; with ``listener`` (the daemon's) its read deadlines and request size limits."""
    if listener is None:
        app = web.Application(middlewares=[_basic_auth])
    else:
        app = web.Application(
            middlewares=[_limits, _basic_auth], client_max_size=listener.limits.max_body_size
        )
        app[LISTENER] = listener
    app[DAEMON] = daemon
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/api/results", results)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


def _daemon(request: web.Request) -> Served:
    return request.app[DAEMON]  # type: ignore[return-value]


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger: a malformed or oversized request is counted, not logged.

    aiohttp logs each at error level with the first 100 bytes of the offending line, which
    would let any client fill the log (and could copy a credential header into it).
    """

    def __init__(self, listener: Listener) -> None:
        super().__init__(logging.getLogger("relayprobe.http"), {})
        self._listener = listener

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), http_exceptions.HttpProcessingError):
            self._listener.note("bad_requests")
            return
        super().log(level, msg, *args, **kwargs)


@web.middleware
async def _limits(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Tell the listener a request is in (no header deadline; a body one) and when it is done."""
    listener, transport = request.app[LISTENER], request.transport
    listener.request_started(transport, request.content.is_eof)
    try:
        size, limit = request.content_length, listener.limits.max_body_size
        if size is not None and size > limit:
            # No endpoint reads a body: refuse a big one before reading it, and end the
            # connection (aiohttp drains what is already coming for up to 10 s, and the body
            # deadline still applies).
            response = web.Response(
                status=413, text=f"request body of {size} bytes exceeds the limit of {limit}\n"
            )
            response.force_close()
            return response
        return await handler(request)
    finally:
        listener.request_finished(transport)


@web.middleware
async def _basic_auth(request: web.Request, handler):  # type: ignore[no-untyped-def]
    web_config = _daemon(request).web
    if not web_config.users:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    user = password = None
    if header.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = None
    if user is None or password is None or not await web_config.check(user, password):
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="relayprobe"'},
        )
    return await handler(request)


async def metrics(request: web.Request) -> web.Response:
    body = _daemon(request).exposition.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def probe(request: web.Request) -> web.Response:
    """Run one configured target now; its metrics only (the exporter's own are on /metrics)."""
    d = _daemon(request)
    name = request.query.get("target")
    configured = ", ".join(d.store.names())
    if not name:
        raise web.HTTPBadRequest(text=f"target parameter is missing; configured: {configured}\n")
    try:
        scrape_timeout = float(request.headers.get("X-Prometheus-Scrape-Timeout-Seconds", 0))
    except ValueError:
        scrape_timeout = 0.0
    task = asyncio.ensure_future(d.scheduler.run_now(name))
    try:
        # A round trip can outlast the scrape: then the run still finishes and lands in /metrics.
        await asyncio.wait_for(
            asyncio.shield(task), scrape_timeout - 0.5 if scrape_timeout > 1 else None
        )
    except KeyError:
        raise web.HTTPBadRequest(
            text=f"unknown target {name!r}; configured: {configured}\n"
        ) from None
    except Busy as exc:
        raise web.HTTPTooManyRequests(text=f"{exc}\n", headers={"Retry-After": "30"}) from None
    except TimeoutError:
        raise web.HTTPGatewayTimeout(
            text=f"target {name} is still running after the scrape timeout; "
            "its result will be in /metrics\n"
        ) from None
    body = exposition(d.store, version=d.version, reload_ok=lambda: d.reload_ok, only=name)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def results(request: web.Request) -> web.Response:
    return web.json_response({"results": _daemon(request).store.results()})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    d = _daemon(request)
    if d.scheduler.running and d.scheduler.config is not None:
        return web.Response(text="Ready\n")
    return web.Response(status=503, text="Not ready: the scheduler is not running\n")


async def reload(request: web.Request) -> web.Response:
    errors = await _daemon(request).reload()
    if errors:
        text = "failed to reload config; the previous one keeps running:\n" + "\n".join(errors)
        return web.Response(status=500, text=text + "\n")
    return web.Response(text="config reloaded\n")


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


async def landing(request: web.Request) -> web.Response:
    d = _daemon(request)
    rows = []
    for state in d.store.states():
        r, name = state.last, html.escape(state.name)
        link = f'<a href="probe?target={html.escape(state.name, quote=True)}">probe now</a>'
        if r is None:
            rows.append(
                f'<tr class="pending"><td>{name}</td><td colspan="13">no run yet</td>'
                f"<td>{link}</td></tr>"
            )
            continue
        t, a = r.timings, r.verdict.auth
        verdict = "ok" if r.success else "FAILED"
        error = "" if r.success and r.reason.value == "ok" else r.message
        cells = [
            name,
            f"{verdict} ({r.status.value})",
            f"{r.stage.value} / {r.reason.value}"
            + "".join(
                f"; {c.check} {c.reason.value}" for c in r.failed_checks if c.reason != r.reason
            ),
            *(_s(seconds) for _, seconds in t.smtp_phases()),
            *map(_s, (t.delivery_seconds, t.total_seconds)),
            r.arrival.placement + (f" ({r.arrival.folder})" if r.arrival.folder else ""),
            " ".join(
                f"{k}={v}"
                for k, v in ((method, getattr(a, method)) for method in AUTH_METHODS)
                if v
            )
            or "–",
            rfc3339(state.finished_at) or "",
            error,
            r.remedy or "",
        ]
        klass = "ok" if r.success else "fail"
        tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
        rows.append(f'<tr class="{klass}">{tds}<td>{link}</td></tr>')
    reload_note = (
        ""
        if d.reload_ok
        else (
            '<p class="fail">The last configuration reload failed; the previous configuration '
            f"keeps running: {html.escape('; '.join(d.reload_errors))}</p>"
        )
    )
    page = _PAGE.format(
        version=html.escape(d.version),
        now=rfc3339(dt.datetime.now(dt.UTC)),
        rows="\n".join(rows),
        reload_note=reload_note,
    )
    return web.Response(text=page, content_type="text/html")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>relayprobe</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 90%; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }}
td:nth-child(13), td:nth-child(14) {{ min-width: 12em; }}
td:last-child {{ white-space: nowrap; }}
tr.ok td:nth-child(2) {{ color: #176117; font-weight: bold; }}
tr.fail td:nth-child(2), p.fail {{ color: #a01010; font-weight: bold; }}
</style></head>
<body>
<h1>relayprobe</h1>
<p>Mail relay delivery probe, version {version}. Results are cached from scheduled probe runs;
page generated {now}.</p>
<p><a href="metrics">Metrics</a> · <a href="api/results">Results (JSON)</a> ·
<a href="-/healthy">Health</a> · <a href="-/ready">Readiness</a></p>
{reload_note}
<table id="results">
<thead><tr><th>Target</th><th>Verdict</th><th>Stage / reason</th><th>Connect s</th><th>TLS s</th>
<th>Auth s</th><th>Submit s</th><th>Delivery s</th><th>Total s</th><th>Placement</th>
<th>Authentication</th><th>Finished</th><th>Last error</th><th>Remedy</th><th></th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
