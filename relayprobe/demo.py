"""``relayprobe demo``: probe an embedded mail system on a schedule and print results as they come."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import yaml

from exporters.daemon import Daemon
from exporters.logs import setup_logging
from probe.result import ProbeResult
from relayprobe.once import format_results

_NEEDS_EXTRA = (
    "relayprobe demo needs the demo extra: pip install 'relayprobe[demo]' "
    "(aiosmtpd, dkimpy, authheaders, pymap)"
)


def write_demo_config(ems: object, state_dir: Path, *, interval: float = 10.0) -> Path:
    """Write the config a user would write for this mail system, secrets in 0600 files."""
    secret_dir = state_dir / "secrets"
    secret_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "tag_secret": secrets.token_urlsafe(32),
        "smtp_password": ems.sender_password,  # type: ignore[attr-defined]
        "imap_password": ems.recipient_password,  # type: ignore[attr-defined]
    }
    for name, value in files.items():
        path = secret_dir / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    host, ca = ems.host, str(ems.ca_file)  # type: ignore[attr-defined]
    mailbox = {
        "host": host,
        "port": ems.imap_port,  # type: ignore[attr-defined]
        "security": "tls",
        "ca_file": ca,
        "auth": {
            "method": "password",
            "username": ems.recipient,  # type: ignore[attr-defined]
            "password_file": "secrets/imap_password",
        },
    }
    config = {
        "instance": "demo",
        "tag_secret_file": "secrets/tag_secret",
        "defaults": {
            "interval": interval,
            "jitter": 0,
            "timeout": "15s",
            "thresholds": {"warning": "5s", "critical": "10s"},
            "expect": {"spf": "pass", "dkim": "pass", "dmarc": "pass", "placement": "inbox"},
            # The embedded mail system's DNS is in memory: no DNS server could explain a verdict.
            "posture": {"explain": False},
        },
        "targets": [
            {
                "name": "demo-submission",
                "smtp": {
                    "host": host,
                    "port": ems.submission_port,  # type: ignore[attr-defined]
                    "security": "starttls",
                    "ca_file": ca,
                    "auth": {
                        "method": "password",
                        "username": ems.sender,  # type: ignore[attr-defined]
                        "password_file": "secrets/smtp_password",
                    },
                },
                "mail_from": ems.sender,  # type: ignore[attr-defined]
                "rcpt_to": ems.recipient,  # type: ignore[attr-defined]
                "mailbox": mailbox,
            },
            {
                # Unauthenticated direct send from an address SPF does not list: the receiver
                # fails SPF and DMARC and files it as junk, as Exchange Online Protection would.
                "name": "demo-direct-send",
                "smtp": {
                    "host": host,
                    "port": ems.mx_port,  # type: ignore[attr-defined]
                    "security": "starttls",
                    "ca_file": ca,
                },
                "mail_from": ems.sender,  # type: ignore[attr-defined]
                "rcpt_to": ems.recipient,  # type: ignore[attr-defined]
                "mailbox": mailbox,
                "expect": {"junk_severity": "warning"},
            },
        ],
    }
    path = state_dir / "relayprobe-demo.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def demo_loop(
    *,
    interval: float,
    count: int,
    state_dir: Path,
    listen: str,
    out: TextIO,
    stop: asyncio.Event,
) -> int:
    """Run the exporter daemon on the embedded mail system; print each result as it comes."""
    try:
        from relayprobe.embedded import EmbeddedMailSystem
    except ImportError:
        print(_NEEDS_EXTRA, file=sys.stderr)
        return 3
    # The demo is the daemon (scheduler, metrics, status page) pointed at the embedded system.
    host, _, port = listen.rpartition(":")
    async with EmbeddedMailSystem(state_dir) as ems:
        path = write_demo_config(ems, state_dir, interval=interval)
        setup_logging("warn", "logfmt")
        # Every result is printed below; the daemon's own "probe failed" lines would repeat them.
        logging.getLogger("relayprobe.scheduler").setLevel(logging.CRITICAL)
        daemon = Daemon(str(path), None)
        config = daemon.load()
        seen: dict[str, int] = {}

        def show(result: ProbeResult) -> None:
            seen[result.target] = seen.get(result.target, 0) + 1
            out.write(f"[run {seen[result.target]}] " + format_results([result]))
            out.flush()
            if count and min(seen.get(t.name, 0) for t in config.targets) >= count:
                stop.set()

        daemon.store.listeners.append(show)
        url = f"http://{host or '127.0.0.1'}:{port}"
        print(f"embedded mail system up: {ems!r}", file=out)
        print(f"demo config: {path}  (try: relayprobe validate {path})", file=out)
        print(f"status page {url}/  metrics {url}/metrics  results {url}/api/results", file=out)
        print(
            "demo-direct-send is meant to fail: it shows how relayprobe reports a spoofed "
            "direct send (SPF and DMARC fail, filed as junk).",
            file=out,
        )
        print(f"probing every {interval:g} s; Ctrl-C to stop\n", file=out, flush=True)
        return await daemon.serve(config, host or "127.0.0.1", int(port), 5.0, stop)


def run_demo(*, interval: float, count: int, state_dir: str | None, listen: str) -> int:
    base = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="relayprobe-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)

    async def main() -> int:
        return await demo_loop(
            interval=interval,
            count=count,
            state_dir=base,
            listen=listen,
            out=sys.stdout,
            stop=asyncio.Event(),
        )

    return asyncio.run(main())
