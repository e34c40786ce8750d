"""``relayprobe run``: the exporter daemon's flags, logging, signals, reload and lifecycle."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from exporters.http import build_app
from exporters.logs import LEVELS, setup_logging
from exporters.metrics import CachedExposition
from exporters.scheduler import Scheduler
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
    p.add_argument("--config.file", dest="config_file", required=True, metavar="FILE")
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
    p.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info")
    p.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt")
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
    p.add_argument("--version", action="version", version=f"relayprobe {__version__}")
    return p


def _listen(address: str) -> tuple[str | None, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None  # ":9833" listens on every address, like the Go exporters
    return host, int(port)


class Daemon:
    """What the HTTP handlers and signal handlers act on: store, scheduler, config, reload state."""

    def __init__(
        self, config_file: str, web_config_file: str | None, *, limits: tuple[int, int] = (3, 30)
    ) -> None:
        self.config_file, self.web_config_file = config_file, web_config_file
        self.version = __version__
        self.store = ResultStore()
        self.scheduler = Scheduler(
            self.store, max_concurrent_smtp=limits[0], max_per_minute=limits[1]
        )
        self.exposition = CachedExposition(
            self.store, version=self.version, reload_ok=lambda: self.reload_ok
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
        return config

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
        self._ssl = self.web.ssl_context()
        runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", host or "*", port, exc.strerror or exc)
            await runner.cleanup()
            return 1
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        reloads: set[asyncio.Task[list[str]]] = set()  # held so a running reload is not collected

        def on_hup() -> None:
            task = asyncio.ensure_future(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await self.scheduler.start(config)
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
        abandoned = await self.scheduler.shutdown(grace)
        if abandoned:
            log.warning("abandoned %d in-flight probe(s) at shutdown", abandoned)
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("stopped")
        return 0


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
    daemon = Daemon(args.config_file, args.web_config, limits=(args.max_conn, args.max_rate))
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
        print(f"{args.config_file}: ok ({len(config.targets)} target(s))")
        return 0
    return asyncio.run(daemon.serve(config, host, port, args.grace))


if __name__ == "__main__":
    sys.exit(main())
