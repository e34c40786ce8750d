"""The HTTP surface (aiohttp): status page, /metrics, /probe, /api/results, health, reload."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import urllib.parse
from typing import Any, Protocol

from aiohttp import http_exceptions, web

# 0.0.4 text: what Prometheus 2.x (Debian 12 ships 2.42) negotiates; our names need no escaping.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

from exporters.limits import Listener
from exporters.metrics import CachedExposition, exposition
from exporters.scheduler import Busy, Scheduler
from exporters.statuspage import (
    Page,
    method_page,
    not_found_page,
    overview_page,
    probe_result_page,
    refused_page,
    target_page,
)
from exporters.store import HISTORY_LENGTH, ResultStore
from exporters.webconfig import WebConfig


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
    app.router.add_get("/target/{name}", target)
    app.router.add_post("/target/{name}/probe", probe_now)
    app.router.add_get("/target/{name}/probe", probe_now_get)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/api/results", results)
    app.router.add_get("/api/posture", posture_api)
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


def _int_query(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(request.query.get(key, default))))
    except ValueError:
        return default


async def results(request: web.Request) -> web.Response:
    """Each target's last result, schedule and history (docs/exporter.md, "/api/results")."""
    d = _daemon(request)
    history = _int_query(request, "history", HISTORY_LENGTH, 0, HISTORY_LENGTH)
    body = d.store.results(
        next_run=d.scheduler.next_run, history=history, only=request.query.get("target")
    )
    return web.json_response({"results": body})


async def posture_api(request: web.Request) -> web.Response:
    """Each monitored sending domain's DNS posture and record history (docs/exporter.md)."""
    monitor = getattr(_daemon(request), "posture", None)
    return web.json_response(monitor.document() if monitor is not None else {"domains": []})


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


#: Seconds between the status page's own reloads, unless ``?refresh=`` says otherwise (0: off).
PAGE_REFRESH = 10


def _html(page: Page, headers: dict[str, str] | None = None) -> web.Response:
    """A status page response: never cached, and no script may run in it (nor in an injection)."""
    csp = (
        f"default-src 'none'; style-src 'sha256-{page.style_sha256}'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    response = web.Response(
        status=page.status,
        text=page.text,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            **(headers or {}),
        },
    )
    # Compressed for browsers that ask (aiohttp does it off the event loop): 200 targets' rows
    # and history strips are some 2.7 MB of HTML, refreshed every 10 s.
    response.enable_compression()
    return response


def _refresh(request: web.Request) -> int:
    seconds = _int_query(request, "refresh", PAGE_REFRESH, 0, 3600)
    return seconds if seconds == 0 else max(2, seconds)


def _instance(d: Served) -> str:
    return d.scheduler.instance  # a shard's has its suffix (exporters/shards.py)


async def landing(request: web.Request) -> web.Response:
    """``/``: the status page; ``?wall=1`` the wall-screen tiles, ``?refresh=N`` its reload."""
    d = _daemon(request)
    page = overview_page(
        d.store.states(),
        next_run=d.scheduler.next_run,
        now=dt.datetime.now(dt.UTC),
        version=d.version,
        instance=_instance(d),
        reload_errors=() if d.reload_ok else d.reload_errors,
        wall=request.query.get("wall", "") not in ("", "0", "false", "no"),
        refresh=_refresh(request),
        posture=d.posture.views() if getattr(d, "posture", None) is not None else (),
    )
    return _html(page)


async def target(request: web.Request) -> web.Response:
    d = _daemon(request)
    name = request.match_info["name"]
    state = d.store.get(name)
    if state is None:
        return _html(not_found_page(name, d.store.names(), root="../"))
    now = dt.datetime.now(dt.UTC)
    return _html(
        target_page(state, next_run=d.scheduler.next_run, now=now, refresh=_refresh(request))
    )


def _cross_site(request: web.Request) -> bool:
    """A form posted from another site (CSRF): browsers say so in Sec-Fetch-Site, older ones
    in Origin. A request with neither (curl, scripts) is not a browser's and is let through."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if not origin:
        return False
    netloc = urllib.parse.urlsplit(origin).netloc
    return netloc not in {request.host, request.headers.get("X-Forwarded-Host")}


async def probe_now(request: web.Request) -> web.Response:
    """POST ``/target/NAME/probe`` (the status page's button): run it, show the result as HTML."""
    d = _daemon(request)
    name = request.match_info["name"]
    if d.store.get(name) is None:
        return _html(not_found_page(name, d.store.names(), root="../../"))
    if _cross_site(request):
        why = "refused: the form was sent from another site; use this daemon's own status page"
        return _html(refused_page(name, why, root="../../", status=403))
    task = asyncio.ensure_future(d.scheduler.run_now(name))
    try:
        result = await asyncio.shield(task)  # a closed browser tab does not abandon the probe
    except KeyError:
        return _html(not_found_page(name, d.store.names(), root="../../"))
    except Busy as exc:
        page = refused_page(name, str(exc), root="../../", status=429)
        return _html(page, {"Retry-After": "30"})
    page = probe_result_page(
        result, d.store.get(name), next_run=d.scheduler.next_run, now=dt.datetime.now(dt.UTC)
    )
    return _html(page)


async def probe_now_get(request: web.Request) -> web.Response:
    """GET on the button's URL sends nothing: 405 with the button to press."""
    d = _daemon(request)
    name = request.match_info["name"]
    if d.store.get(name) is None:
        return _html(not_found_page(name, d.store.names(), root="../../"))
    return _html(method_page(name), {"Allow": "POST"})
