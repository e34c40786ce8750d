"""``relayprobe run``: the exporter daemon's flags, logging, signals, reload and lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from exporters.http import ServerLog, build_app
from exporters.limits import (
    MIN_CONNECTIONS,
    RESERVE_BASE,
    RESERVE_PER_TARGET,
    Descriptors,
    HttpLimits,
    Listener,
    connection_budget,
    raise_nofile_limit,
)
from exporters.logs import LEVELS, setup_logging
from exporters.metrics import CachedExposition
from exporters.posture import PostureMonitor
from exporters.scheduler import Scheduler
from exporters.shards import SHARDS_ENV, Shard, ShardError, assignment, resolve
from exporters.store import ResultStore
from exporters.webconfig import WebConfig, WebConfigError, load_web_config
from probe import Config, ConfigError, __version__, clear_token_cache, load_config

log = logging.getLogger("relayprobe.daemon")

DEFAULT_PORT = 9833
SHUTDOWN_GRACE = 10.0  # seconds in-flight probes get after SIGTERM before they are abandoned


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relayprobe run",
        description="Run every configured target on its schedule and serve Prometheus metrics.",
    )
    p.add_argument(
        "--config.file",
        dest="config_file",
        required=True,
        metavar="FILE",
        help="the relayprobe YAML configuration (relayprobe validate checks it)",
    )
    p.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the config (and the web config) and exit",
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=f":{DEFAULT_PORT}",
        metavar="[HOST]:PORT",
        help=f"where to serve HTTP (default :{DEFAULT_PORT})",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        metavar="FILE",
        help="TLS and basic auth, exporter-toolkit format",
    )
    _web_limit_flags(p)
    p.add_argument(
        "--log.level",
        dest="log_level",
        choices=list(LEVELS),
        default="info",
        help="relayprobe's own log level; protocol exchanges only at debug (default info)",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        choices=["logfmt", "json"],
        default="logfmt",
        help="one line per event on stderr (default logfmt)",
    )
    p.add_argument(
        "--shutdown.grace",
        dest="grace",
        type=float,
        default=SHUTDOWN_GRACE,
        metavar="SECONDS",
        help="how long SIGTERM waits for in-flight probes",
    )
    p.add_argument(
        "--smtp.max-connections",
        dest="max_conn",
        type=int,
        default=3,
        metavar="N",
        help="concurrent SMTP sessions per sending mailbox (Microsoft: 3)",
    )
    p.add_argument(
        "--smtp.max-messages-per-minute",
        dest="max_rate",
        type=int,
        default=30,
        metavar="N",
        help="probe messages per sending mailbox and minute (Microsoft: 30)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="probe only shard I's share of the targets (0 <= I < N; rendezvous hashing of target "
        "names, docs/kubernetes.md#shards)",
    )
    p.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help=f"N shards, this one's number from the pod name's -<ordinal> (POD_NAME or HOSTNAME, "
        f"a StatefulSet's); default ${SHARDS_ENV}",
    )
    p.add_argument("--version", action="version", version=f"relayprobe {__version__}")
    return p


#: The ``--web.*`` limits: flag, HttpLimits field, metavar, help (the default is appended).
_WEB_LIMITS = (
    (
        "--web.max-connections",
        "max_connections",
        "N",
        "open HTTP connections at most; at the cap a new one replaces the oldest that is not in a "
        "request, or is closed at once. Never more than the descriptor limit minus a reserve for "
        f"probes ({RESERVE_BASE} + {RESERVE_PER_TARGET} per target) minus the listen backlog",
    ),
    (
        "--web.read-header-timeout",
        "read_header_timeout",
        "SECONDS",
        "close a connection whose request headers (TLS handshake included) are not complete this "
        "long after it opened, or after the first byte of its next request",
    ),
    (
        "--web.read-body-timeout",
        "read_body_timeout",
        "SECONDS",
        "close a connection whose request body is not complete this long after its headers",
    ),
    (
        "--web.idle-timeout",
        "idle_timeout",
        "SECONDS",
        "close a kept-alive connection that sends no new request for this long",
    ),
    (
        "--web.max-request-line-size",
        "max_line_size",
        "BYTES",
        "longest request line (method, path, query); longer ones get 400",
    ),
    (
        "--web.max-header-size",
        "max_field_size",
        "BYTES",
        "longest header line (name and value); longer ones get 400",
    ),
    ("--web.max-headers", "max_headers", "N", "most header lines in a request; more get 400"),
    (
        "--web.max-body-size",
        "max_body_size",
        "BYTES",
        "largest request body (no endpoint reads one); larger ones get 413",
    ),
)


def _web_limit_flags(p: argparse.ArgumentParser) -> None:
    defaults = HttpLimits()
    for flag, field, metavar, text in _WEB_LIMITS:
        default = getattr(defaults, field)
        p.add_argument(
            flag,
            dest=field,
            type=type(default),
            default=default,
            metavar=metavar,
            help=f"{text} (default {default:g})",
        )


def _http_limits(args: argparse.Namespace) -> HttpLimits:
    """The ``--web.*`` limits; ValueError names the first flag that is not positive."""
    for flag, field, _, _ in _WEB_LIMITS:
        if not getattr(args, field) > 0:
            raise ValueError(f"{flag} must be positive")
    return HttpLimits(**{field: getattr(args, field) for _, field, _, _ in _WEB_LIMITS})


def _listen(address: str) -> tuple[str | None, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None  # ":9833" listens on every address, like the Go exporters
    return host, int(port)


class Daemon:
    """What the HTTP handlers and signal handlers act on: store, scheduler, config, reload state."""

    def __init__(
        self,
        config_file: str,
        web_config_file: str | None,
        *,
        limits: tuple[int, int] = (3, 30),
        http_limits: HttpLimits | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.config_file, self.web_config_file = config_file, web_config_file
        self.shard = shard
        # Target name -> owning shard for every target of the config (relayprobe_target_shard).
        self.assignment: dict[str, int] = {}
        self.http_limits = http_limits or HttpLimits()
        self._listener: Listener | None = None
        self._descriptors: Descriptors | None = None
        self.version = __version__
        self.store = ResultStore()
        self.scheduler = Scheduler(
            self.store, max_concurrent_smtp=limits[0], max_per_minute=limits[1], shard=shard
        )
        self.posture = PostureMonitor()  # sending domains' DNS posture (exporters/posture.py)
        self.exposition = CachedExposition(
            self.store,
            version=self.version,
            reload_ok=lambda: self.reload_ok,
            shards=self._shard_view,
            posture=self.posture.views,
        )
        self.web: WebConfig = WebConfig()
        self.reload_ok = True
        self.reload_errors: list[str] = []
        self._ssl = None
        self._reload_lock = asyncio.Lock()

    def load(self) -> Config:
        config = load_config(self.config_file)
        for warning in config.warnings:
            log.warning("config: %s", warning)
        if self.shard is None:
            return config
        names = [t.name for t in config.targets]
        owners = assignment(names, self.shard.count)
        kept = [t for t in config.targets if owners[t.name] == self.shard.index]
        self.assignment = owners
        log.info(
            "shard %d of %d: %d of %d target(s)",
            self.shard.index,
            self.shard.count,
            len(kept),
            len(names),
            extra={"instance": self.shard.instance(config.instance)},
        )
        return config.model_copy(update={"targets": kept})

    def _shard_view(self) -> tuple[Shard, dict[str, int]] | None:
        return (self.shard, self.assignment) if self.shard is not None else None

    async def reload(self) -> list[str]:
        """Load the config (and web config) again; on any error keep the old one and say why."""
        async with self._reload_lock:
            # A reload is also how an operator says "the tenant changed" (consent granted, key
            # rotated, secret renewed): every cached token and loaded sign-in is dropped with it.
            clear_token_cache()
            try:
                config = await asyncio.to_thread(self.load)
                web_config = load_web_config(self.web_config_file)
            except ConfigError as exc:
                errors = [f"{exc.file or self.config_file}: {e}" for e in exc.errors]
            except WebConfigError as exc:
                errors = exc.errors
            else:
                errors = []
            if errors:
                self.reload_ok, self.reload_errors = False, errors
                for line in errors:
                    log.error("reload rejected, previous config keeps running: %s", line)
                return errors
            await self.scheduler.apply(config)
            self.store.trace_targets(t.name for t in config.targets if t.trace.enabled)
            await self.posture.apply(config)
            self._fit_connection_cap(len(config.targets))
            self.web = web_config
            if self._ssl is not None and web_config.tls is not None:
                web_config.load_certs(self._ssl)  # renewed certificates without a restart
            if (self._ssl is None) != (web_config.tls is None):
                log.warning("switching TLS on or off needs a restart; the listener is unchanged")
            self.reload_ok, self.reload_errors = True, []
            log.info("config reloaded", extra={"targets": len(config.targets)})
            return []

    async def serve(
        self,
        config: Config,
        host: str | None,
        port: int,
        grace: float,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
        self._descriptors = descriptors = raise_nofile_limit()
        limits = self.http_limits
        budget = connection_budget(descriptors.soft, len(config.targets), limits.max_connections)
        self._ssl = self.web.ssl_context()
        self._listener = listener = Listener(limits, budget.cap, self._ssl)
        runner = web.AppRunner(
            build_app(self, listener),
            access_log=None,
            handle_signals=False,
            logger=ServerLog(listener),
            **limits.handler_args(),
        )
        await runner.setup()
        listener.handler_factory = runner.server
        loop = asyncio.get_running_loop()
        try:
            # Not web.TCPSite: the listener counts sockets before TLS, so it does the handshake.
            server = await loop.create_server(
                listener, host, port, backlog=budget.backlog, reuse_address=True
            )
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host or "*", port, exc.strerror or exc)
            await runner.cleanup()
            return 1
        self._log_limits(budget.backlog, budget.reserve)
        stop = stop or asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        reloads: set[asyncio.Task[list[str]]] = set()  # held so a running reload is not collected

        def on_hup() -> None:
            task = asyncio.ensure_future(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await self.scheduler.start(config)
        # relayprobe_trace_total born at 0 for every status of targets with trace enabled.
        self.store.trace_targets(t.name for t in config.targets if t.trace.enabled)
        await self.posture.apply(config)
        scheme = "https" if self._ssl else "http"
        log.info(
            "listening",
            extra={
                "address": f"{scheme}://{host or '0.0.0.0'}:{port}",
                "targets": len(config.targets),
                "version": self.version,
            },
        )
        await stop.wait()
        log.info("shutting down: no new probes; waiting up to %.0f s for running ones", grace)
        await self.posture.stop()
        abandoned = await self.scheduler.shutdown(grace)
        if abandoned:
            log.warning("abandoned %d in-flight probe(s) at shutdown", abandoned)
        server.close()
        await runner.cleanup()
        listener.close_all()  # what aiohttp never saw: connections still in the TLS handshake
        await server.wait_closed()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0

    def _log_limits(self, backlog: int, reserve: int) -> None:
        """Say at start which limits are in force, and warn when descriptors cut the cap."""
        assert self._descriptors is not None and self._listener is not None
        fds, limits, cap = self._descriptors, self.http_limits, self._listener.cap
        if fds.soft != fds.before:
            log.info(
                "raised the descriptor limit (RLIMIT_NOFILE) from %d to %d", fds.before, fds.soft
            )
        log.info(
            "HTTP limits",
            extra={
                "max_connections": cap,
                "descriptors": fds.soft,
                "descriptors_hard": fds.hard,
                "descriptor_reserve": reserve,
                "backlog": backlog,
                "read_header_timeout": limits.read_header_timeout,
                "read_body_timeout": limits.read_body_timeout,
                "idle_timeout": limits.idle_timeout,
                "max_request_line_size": limits.max_line_size,
                "max_header_size": limits.max_field_size,
                "max_headers": limits.max_headers,
                "max_body_size": limits.max_body_size,
            },
        )
        self._warn_cap(cap, reserve, backlog)

    def _warn_cap(self, cap: int, reserve: int, backlog: int) -> None:
        assert self._descriptors is not None
        if cap >= self.http_limits.max_connections:
            return
        soft = self._descriptors.soft
        log.log(
            logging.WARNING if cap < MIN_CONNECTIONS else logging.INFO,
            "the descriptor limit %d allows %d HTTP connections, not --web.max-connections %d "
            "(%d kept for probes, %d for the listen backlog); raise it (ulimit -n, LimitNOFILE=) "
            "for more",
            soft,
            cap,
            self.http_limits.max_connections,
            reserve,
            backlog,
        )

    def _fit_connection_cap(self, targets: int) -> None:
        """After a reload: more targets keep more descriptors for probes."""
        if self._listener is None or self._descriptors is None:
            return
        budget = connection_budget(
            self._descriptors.soft, targets, self.http_limits.max_connections
        )
        if budget.cap != self._listener.cap:
            self._listener.cap = budget.cap
            log.info("HTTP connection cap is now %d (%d targets)", budget.cap, targets)
            self._warn_cap(budget.cap, budget.reserve, budget.backlog)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        host, port = _listen(args.listen)
    except ValueError:
        print(
            f"relayprobe: --web.listen-address {args.listen!r}: expected [HOST]:PORT",
            file=sys.stderr,
        )
        return 3
    if args.max_conn < 1 or args.max_rate < 1:
        print("relayprobe: --smtp.max-* limits must be at least 1", file=sys.stderr)
        return 3
    try:
        http_limits = _http_limits(args)
    except ValueError as exc:
        print(f"relayprobe: {exc}", file=sys.stderr)
        return 3
    try:
        shard = resolve(args.shard, args.shards)
    except ShardError as exc:
        print(f"relayprobe: {exc}", file=sys.stderr)
        return 3
    daemon = Daemon(
        args.config_file,
        args.web_config,
        limits=(args.max_conn, args.max_rate),
        http_limits=http_limits,
        shard=shard,
    )
    try:
        config = daemon.load()
        daemon.web = load_web_config(args.web_config)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"relayprobe: {exc.file or args.config_file}: {line}", file=sys.stderr)
        return 3
    except WebConfigError as exc:
        for line in exc.errors:
            print(f"relayprobe: {line}", file=sys.stderr)
        return 3
    if args.config_check:
        share = f", shard {shard.index} of {shard.count}" if shard is not None else ""
        print(f"{args.config_file}: ok ({len(config.targets)} target(s){share})")
        return 0
    return asyncio.run(daemon.serve(config, host, port, args.grace))


if __name__ == "__main__":
    sys.exit(main())
