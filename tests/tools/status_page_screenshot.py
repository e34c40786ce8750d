"""Screenshot the status page in headless Chromium (docs/exporter.md, "Status page").

    .venv/bin/python tests/tools/status_page_screenshot.py                 # docs/status-page.png
    .venv/bin/python tests/tools/status_page_screenshot.py --page '?wall=1' --width 1920 wall.png
    .venv/bin/python tests/tools/status_page_screenshot.py --url http://127.0.0.1:9833/ out.png

Without ``--url`` it serves the real HTTP app (exporters/http.py, the very page renderer) on a
loopback port over a result store filled with a synthetic hour of six targets, one run a minute
each: an OK submission, a connector drifting past its warning threshold, a direct send that
flaps into the junk folder, a mailbox whose basic auth was switched off (backing off), a
rejected recipient, and a host out of file descriptors (UNKNOWN). No mail system, no root.
Needs Chromium (tests/tools/install-browser.sh; ``--chromium`` for another binary).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import socket
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from exporters.http import build_app
from exporters.store import HISTORY_LENGTH, ResultStore, TargetSpec
from exporters.webconfig import WebConfig
from probe import (
    Arrival,
    AuthVerdict,
    CheckResult,
    HeaderVerdict,
    Hop,
    ProbeResult,
    Reason,
    SmtpReceipt,
    SpamVerdict,
    Stage,
    Status,
    Timings,
    __version__,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
INTERVAL = 60.0
RELAY = ("smtp.office365.com", 587)


@dataclass
class _Scheduler:
    """What the status page asks the scheduler: when each target runs next."""

    next_runs: dict[str, dt.datetime]
    config: None = None
    running: bool = True
    instance: str = "probe-eu-1"

    def next_run(self, name: str) -> dt.datetime | None:
        return self.next_runs.get(name)


@dataclass
class _Daemon:
    """The parts of exporters.http.Served the status page reads."""

    store: ResultStore
    scheduler: _Scheduler
    version: str = __version__
    web: WebConfig = field(default_factory=WebConfig)
    exposition: object = None
    reload_ok: bool = True
    reload_errors: list[str] = field(default_factory=list)


def _receipt(code: int = 250, reply: str = "2.0.0 OK <queued> [Hostname=AM0PR01MB0001]"):
    return SmtpReceipt(
        *RELAY,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        cert_not_after=dt.datetime(2027, 6, 30, tzinfo=dt.UTC),
        reply_code=code,
        reply=reply,
    )


def _delivered(name, started, delivery, *, junk=False, spf="pass", warn=None, crit=None):
    """A delivered probe judged against warning/critical thresholds and inbox placement."""
    checks, status, reason = [], Status.OK, Reason.OK
    if warn is not None:
        level = Status.CRITICAL if crit and delivery > crit else Status.WARNING
        slow = delivery > warn
        why = Reason.LATENCY_CRITICAL if level is Status.CRITICAL else Reason.LATENCY_WARNING
        checks.append(
            CheckResult(
                "latency",
                not slow,
                level if slow else Status.OK,
                why if slow else Reason.OK,
                f"delivered in {delivery:.1f} s (warning {warn:g} s"
                + (f", critical {crit:g} s)" if crit else ")"),
            )
        )
        if slow:
            status, reason = level, why
    checks.append(
        CheckResult(
            "placement",
            not junk,
            Status.CRITICAL if junk else Status.OK,
            Reason.JUNKED if junk else Reason.OK,
            "landed in Junk Email (expected inbox)" if junk else "inbox",
        )
    )
    for method, got in (("spf", spf), ("dkim", "pass"), ("dmarc", "fail" if junk else "pass")):
        ok = got == "pass"
        checks.append(
            CheckResult(
                method,
                ok,
                Status.OK if ok else Status.CRITICAL,
                Reason.OK if ok else Reason.AUTH_RESULT_MISMATCH,
                f"{method}={got}" + ("" if ok else " (expected pass)"),
            )
        )
    failed = [c for c in checks if not c.ok]
    if any(c.status is Status.CRITICAL for c in failed):
        status = Status.CRITICAL
        reason = Reason.JUNKED if junk else failed[0].reason
    folder = "Junk Email" if junk else "Inbox"
    message = (
        "; ".join(c.message for c in failed)
        if failed
        else f"delivered to {folder} in {delivery:.2f} s; spf={spf} dkim=pass dmarc=pass"
    )
    remedy = None
    if junk:
        remedy = (
            "the receiver junked the probe: publish the relay's IP in the sender domain's SPF "
            "record and sign with DKIM so DMARC passes"
        )
    accepted = started + dt.timedelta(seconds=0.9)
    return ProbeResult(
        target=name,
        status=status,
        stage=Stage.DONE,
        reason=reason,
        message=message,
        remedy=remedy,
        started_at=started,
        timings=Timings(0.05, 0.11, 0.32, 0.41, delivery, delivery + 1.2),
        smtp=_receipt(),
        arrival=Arrival(folder=folder, placement="junk" if junk else "inbox"),
        verdict=HeaderVerdict(
            auth=AuthVerdict(
                spf=spf,
                dkim="pass",
                dmarc="fail" if junk else "pass",
                dmarc_action="quarantine" if junk else "none",
                compauth="fail" if junk else "pass",
                compauth_reason="001" if junk else "100",
                source="Authentication-Results",
            ),
            spam=SpamVerdict(
                scl=5 if junk else 1,
                bcl=0,
                sfv="SPM" if junk else "NSPM",
                cat="SPM" if junk else "NONE",
                dest="J" if junk else "I",
            ),
            hops=[
                Hop("AM0PR01MB0001.eurprd01.prod.outlook.com", "app01.example.net", started, None),
                Hop(
                    "DB5PR02MB0002.eurprd02.prod.outlook.com",
                    "AM0PR01MB0001.eurprd01.prod.outlook.com",
                    accepted + dt.timedelta(seconds=delivery * 0.7),
                    delivery * 0.7,
                ),
            ],
        ),
        probe_id=f"{random.getrandbits(40):010x}",
        checks=checks,
    )


def _failed(name, started, status, stage, reason, message, remedy, *, code=None, reply=None):
    return ProbeResult(
        target=name,
        status=status,
        stage=stage,
        reason=reason,
        message=message,
        remedy=remedy,
        started_at=started,
        timings=Timings(0.05, 0.12, 0.3 if stage is not Stage.AUTH else None),
        smtp=_receipt(code, reply) if code else None,
        probe_id=f"{random.getrandbits(40):010x}",
    )


def synthetic_store(now: dt.datetime) -> tuple[ResultStore, dict[str, dt.datetime]]:
    """An hour of results for six targets (seeded, so the picture only changes with the code)."""
    random.seed(13)
    store = ResultStore()
    specs = [
        TargetSpec(
            "m365-submission",
            INTERVAL,
            (("warning", 60.0), ("critical", 300.0)),
            ("latency", "placement", "spf", "dkim", "dmarc"),
        ),
        TargetSpec(
            "m365-connector",
            INTERVAL,
            (("warning", 20.0), ("critical", 120.0)),
            ("latency", "placement", "spf", "dkim", "dmarc"),
        ),
        TargetSpec(
            "direct-send",
            INTERVAL,
            (("warning", 60.0), ("critical", 300.0)),
            ("latency", "placement", "spf", "dkim", "dmarc"),
        ),
        TargetSpec("legacy-app", INTERVAL, (), ("placement",)),
        TargetSpec("helpdesk-mailbox", INTERVAL, (), ("placement",)),
        TargetSpec("site-b-relay", INTERVAL, (("warning", 60.0),), ("latency", "placement")),
    ]
    store.set_targets(specs)
    next_runs: dict[str, dt.datetime] = {}
    basic_off = (
        "auth smtp.office365.com:587: AUTH LOGIN refused: 535 5.7.139 Authentication "
        "unsuccessful, basic authentication is disabled. [AM0PR01CA0001]"
    )
    for i in range(HISTORY_LENGTH):
        minutes_ago = HISTORY_LENGTH - i
        for k, spec in enumerate(specs):
            started = now - dt.timedelta(seconds=(minutes_ago - 1) * INTERVAL + 9 + 7 * k)
            name = spec.name
            if name == "m365-submission":
                r = _delivered(name, started, random.uniform(1.8, 6.5), warn=60, crit=300)
            elif name == "m365-connector":  # slow drift upwards past the warning threshold
                d = 4 + (i / HISTORY_LENGTH) ** 2.2 * 24 + random.uniform(-1.5, 1.5)
                r = _delivered(name, started, d, warn=20, crit=120)
            elif name == "direct-send":  # flaps into the junk folder
                junk = i % 7 in (3, 4) or i >= HISTORY_LENGTH - 2
                r = _delivered(
                    name,
                    started,
                    random.uniform(2, 9),
                    junk=junk,
                    spf="fail" if junk else "pass",
                    warn=60,
                    crit=300,
                )
            elif name == "legacy-app":
                if i < HISTORY_LENGTH - 9:
                    r = _delivered(name, started, random.uniform(2, 5))
                else:  # basic auth switched off: configuration class, backs off
                    if i < HISTORY_LENGTH - 4 and i % 2:
                        continue  # the backoff spaces the runs out
                    r = _failed(
                        name,
                        started,
                        Status.CRITICAL,
                        Stage.AUTH,
                        Reason.AUTH_BASIC_DISABLED,
                        basic_off,
                        "basic authentication is blocked (authentication policy or security "
                        "defaults): switch the target to auth.method oauth2",
                        code=535,
                        reply="5.7.139 Authentication unsuccessful, basic "
                        "authentication is disabled. [AM0PR01CA0001]",
                    )
            elif name == "helpdesk-mailbox":
                if i < HISTORY_LENGTH - 3:
                    r = _delivered(name, started, random.uniform(1.5, 4))
                else:
                    r = _failed(
                        name,
                        started,
                        Status.CRITICAL,
                        Stage.SUBMIT,
                        Reason.SMTP_REJECTED,
                        "submit smtp.office365.com:587: RCPT TO refused: 550 5.1.10 "
                        "RESOLVER.ADR.RecipientNotFound; Recipient helpdesk@example.net not "
                        "found by SMTP address lookup",
                        "the recipient does not exist (any more): check rcpt_to, or recreate "
                        "the mailbox or its alias",
                        code=550,
                        reply="5.1.10 RESOLVER.ADR.RecipientNotFound",
                    )
            else:  # site-b-relay: this host ran out of descriptors for the last runs
                if i < HISTORY_LENGTH - 2:
                    r = _delivered(name, started, random.uniform(3, 9), warn=60, crit=None)
                else:
                    r = _failed(
                        name,
                        started,
                        Status.UNKNOWN,
                        Stage.CONNECT,
                        Reason.INTERNAL_ERROR,
                        "connect smtp.office365.com:587: this host is out of file descriptors "
                        "(Too many open files)",
                        "raise relayprobe's limit for file descriptors (ulimit -n, systemd "
                        "LimitNOFILE, the container's limits) or find what holds them (ls "
                        "/proc/<pid>/fd); the relay was not reached, so this says nothing "
                        "about it",
                    )
            total = r.timings.total_seconds or 1.0
            finished = min(started + dt.timedelta(seconds=total), now - dt.timedelta(seconds=2 + k))
            store.record(r, finished)
            if name == "legacy-app" and r.reason is Reason.AUTH_BASIC_DISABLED:
                n = (store.get(name).consecutive_config_failures or 0) + 1  # type: ignore[union-attr]
                store.set_backoff(name, min(INTERVAL * 2**n, 3600), n)
    for k, spec in enumerate(specs):
        state = store.get(spec.name)
        assert state is not None and state.finished_at is not None
        wait = INTERVAL + state.backoff_seconds
        next_runs[spec.name] = state.finished_at + dt.timedelta(seconds=wait - 3 * k)
    return store, next_runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def screenshot(chromium: str, url: str, out: Path, width: int, height: int) -> None:
    """Chromium's own ``--screenshot`` of ``url`` at ``width``×``height`` CSS pixels."""
    with tempfile.TemporaryDirectory(prefix="relayprobe-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out.resolve()}",
            url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 90)
    if proc.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({proc.returncode}): {err.decode(errors='replace')}")


async def _synthetic(args: argparse.Namespace) -> None:
    now = dt.datetime.now(dt.UTC)
    store, next_runs = synthetic_store(now)
    app = build_app(_Daemon(store, _Scheduler(next_runs)))  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        url = f"http://127.0.0.1:{port}/{args.page}"
        # Chromium screenshots an error page as happily as the status page: refuse anything else.
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).status)
        if status != 200:
            raise SystemExit(f"{url} answered HTTP {status}, not the status page")
        await screenshot(args.chromium, url, args.out, args.width, args.height)
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "status-page.png")
    p.add_argument("--url", help="screenshot this page of a running daemon instead")
    p.add_argument("--width", type=int, default=1366)
    p.add_argument("--height", type=int, default=960)
    p.add_argument(
        "--page",
        default="",
        help="path and query after / of the synthetic page: '?wall=1', 'target/direct-send'",
    )
    p.add_argument("--chromium", default=CHROMIUM)
    args = p.parse_args(argv)
    if args.url:
        asyncio.run(screenshot(args.chromium, args.url, args.out, args.width, args.height))
    else:
        asyncio.run(_synthetic(args))
    print(f"status page screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
