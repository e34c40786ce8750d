"""Detection overhead: the probe's reported delivery time minus when the mailbox first holds it.

Runs against the local Postfix/Dovecot mail system (tests/testbed; started if it is not up). The
probe's mailbox is watched over IMAP (``--protocol imap``, the default: MailboxWatch on Dovecot)
or over Microsoft Graph (``--protocol graph``: GraphWatch through the Graph stand-in
tests/graph/standin.py, over the real Dovecot, with tokens from the local OAuth authority). The
moment the mailbox first holds the probe is taken by a reference IMAP client on its own
connection to Dovecot (NOOP + UID SEARCH every 10 ms), the earliest any client can see it; the
probe's detection is the watch's ``detected_at``. Times are relative to the relay's 250 reply
to DATA.

    .venv/bin/python bench/detection.py --runs 30
    .venv/bin/python bench/detection.py --protocol graph --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import imapclient  # noqa: E402

from probe import tls  # noqa: E402
from probe.config import parse_config  # noqa: E402
from probe.message import build_message  # noqa: E402
from probe.roundtrip import Watch  # noqa: E402
from probe.smtp.submission import send_probe  # noqa: E402
from probe.tag import make_tag  # noqa: E402

SENDER, SENDER_PASSWORD = "probe@probe.test", "ProbePass-1"
TAG_SECRET = "bench-tag-secret-0123456789abcdef"


class ImapClock:
    """A reference client: NOOP + UID SEARCH every 10 ms on its own connection to Dovecot.

    It notes the monotonic time the probe first becomes visible in the mailbox, the earliest any
    client can see it. (Watching Dovecot's maildir directly was tried first: a 1 ms directory
    poll made Dovecot's own IDLE notifications stop, so it disturbed what it measured.)
    """

    def __init__(self, user: str, password: str, ca_file: Path) -> None:
        ctx = tls.client_context(ca_file=ca_file)
        self.client = imapclient.IMAPClient("127.0.0.1", 10993, ssl_context=ctx)
        self.client.login(user, password)
        self.last = int(self.client.select_folder("INBOX")[b"UIDNEXT"]) - 1
        self.seen: list[int] = []  # the probes it saw: removed by close()

    def wait_for(self, nonce: str, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        key = b"BODY[HEADER.FIELDS (X-RELAYPROBE-TAG)]"
        while time.monotonic() < deadline:
            self.client.noop()
            seen_at = time.monotonic()
            new = [u for u in self.client.search(["UID", f"{self.last + 1}:*"]) if u > self.last]
            if new:
                self.last = max(new)
                fetched = self.client.fetch(new, [b"BODY.PEEK[HEADER.FIELDS (X-RELAYPROBE-TAG)]"])
                mine = [u for u, d in fetched.items() if nonce.encode() in d.get(key, b"")]
                if mine:
                    self.seen += mine
                    return seen_at
            time.sleep(0.01)
        return None

    def close(self) -> None:
        # The watches under test do not delete (a watch that won the race would expunge the probe
        # before this client saw it): the bench removes exactly the probes it sent and saw.
        if self.seen:
            self.client.delete_messages(self.seen)
            self.client.expunge(self.seen)
        self.client.logout()


def _spy(clock: ImapClock, nonce: str, out: list[float | None]) -> None:
    out.append(clock.wait_for(nonce))


@dataclass
class Bench:
    """One protocol's set-up: the probe's config, its watch per mode and the table's headings."""

    config: Any  # probe.config.Config with one target
    rcpt_to: str
    #: The reference client's Dovecot login (the recipient's mailbox) and the testbed's CA.
    clock_login: tuple[str, str]
    testbed_ca: Path
    #: Row name -> a new (not started) watch of the target's mailbox with that mode's settings.
    modes: dict[str, Callable[[], Watch]]
    pause: float  # seconds between probes
    column: str  # heading of the modes column
    landing: str  # what the landing column is called
    #: Requests the Graph stand-in has served so far (the requests/probe column), or None.
    requests: Callable[[], int] | None = None
    close: list[Callable[[], None]] = field(default_factory=list)


def _target(name: str, rcpt_to: str, mailbox: dict[str, Any], testbed_ca: str) -> dict[str, Any]:
    auth = {"method": "password", "username": SENDER, "password": SENDER_PASSWORD}
    return {
        "name": name,
        "smtp": {"host": "127.0.0.1", "port": 10587, "ca_file": testbed_ca, "auth": auth},
        "mail_from": SENDER,
        "rcpt_to": rcpt_to,
        "mailbox": mailbox,
        "junk_folders": [],
        "timeout": "30s",
    }


def imap_bench(state_dir: Path) -> Bench:
    """MailboxWatch on the sender's own Dovecot mailbox (it mails itself)."""
    from probe.imap.watch import MailboxWatch
    from probe.imap.watcher import WatchSettings

    ca = state_dir / "tls" / "ca.crt"
    auth = {"method": "password", "username": SENDER, "password": SENDER_PASSWORD}
    mailbox = {"host": "127.0.0.1", "port": 10993, "ca_file": str(ca), "auth": auth}
    data = {
        "instance": "bench",
        "tag_secret": TAG_SECRET,
        "targets": [_target("bench", SENDER, mailbox, str(ca))],
    }
    config = parse_config(data, base_dir=ROOT)
    target = config.targets[0]

    def watch(settings: WatchSettings) -> Watch:
        return MailboxWatch(
            target.mailbox,
            target.junk_folders,
            secret=config.tag_secret.get().encode(),
            instance=config.instance,
            settings=settings,
        )

    return Bench(
        config=config,
        rcpt_to=SENDER,
        clock_login=(SENDER, SENDER_PASSWORD),
        testbed_ca=ca,
        modes={
            "fast NOOP polls, then 0.5 s polls (default)": partial(
                watch, WatchSettings(delete=False)
            ),
            "0.5 s polls only": partial(watch, WatchSettings(fast_window=0.0, delete=False)),
        },
        pause=0.2,
        column="mode",
        landing="visible",
    )


def graph_bench(state_dir: Path) -> Bench:
    """GraphWatch through the Graph stand-in over Dovecot's inbox@, app-only OAuth tokens."""
    import trustme

    from probe.config.model import GraphPoll
    from probe.graph.watch import GraphWatch
    from probe.m365 import tokens
    from tests.graph.standin import GraphStandIn
    from tests.oauth.authority import Authority

    box, box_password = "inbox@probe.test", "InboxPass-1"
    client_secret = "bench-graph-secret-0123456789"
    tb_ca = state_dir / "tls" / "ca.crt"
    ca = trustme.CA()
    authority = Authority(ca).start()
    authority.add_secret_client("app-bench", client_secret, box).graph_roles = ["Mail.ReadWrite"]
    ca_file = Path(tempfile.mkdtemp(prefix="relayprobe-graph-bench-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    os.environ[tokens.CA_ENV] = str(ca_file)
    standin = GraphStandIn(
        authority=authority,
        ca=ca,
        passwords={box: box_password},
        imap_host="127.0.0.1",
        imap_port=10993,
        imap_ca_file=tb_ca,
        postfix_log=state_dir / "log" / "postfix.log",
    ).start()
    mailbox = {
        "protocol": "graph",
        "graph_url": standin.base,
        "ca_file": str(ca_file),
        "auth": {
            "method": "oauth2",
            "username": box,
            "authority": authority.url,
            "client_id": "app-bench",
            "client_secret": client_secret,
        },
    }
    rcpt_to = "inbox+graphbench@probe.test"
    data = {
        "instance": "bench-graph",
        "tag_secret": TAG_SECRET,
        "targets": [_target("bench-graph", rcpt_to, mailbox, str(tb_ca))],
    }
    config = parse_config(data, base_dir=ROOT)
    target = config.targets[0]

    def watch(poll: GraphPoll) -> Watch:
        return GraphWatch(
            target.mailbox,
            target.junk_folders,
            secret=config.tag_secret.get().encode(),
            instance=config.instance,
            stale_after=3600.0,
            token_provider=tokens.provider_for(target.mailbox.auth),
            poll=poll,
            delete=False,  # the reference client removes the probes (ImapClock.close)
        )

    return Bench(
        config=config,
        rcpt_to=rcpt_to,
        clock_login=(box, box_password),
        testbed_ca=tb_ca,
        modes={
            "0.25 s polls for 5 s, then 2 s (default)": partial(watch, GraphPoll()),
            "0.1 s polls for 5 s": partial(watch, GraphPoll(fast=0.1)),
            "2 s polls only": partial(watch, GraphPoll(fast_window=0.001)),
        },
        pause=0.3,
        column="poll",
        landing="held",
        requests=lambda: len(standin.requests),
        close=[standin.stop, authority.stop],
    )


PROTOCOLS: dict[str, Callable[[Path], Bench]] = {"imap": imap_bench, "graph": graph_bench}


async def measure(bench: Bench, new_watch: Callable[[], Watch], runs: int) -> list[tuple]:
    """(reported delivery, landing, detection overhead) in seconds for each of ``runs`` probes."""
    config = bench.config
    target = config.targets[0]
    watch = new_watch()
    await watch.start()
    clock = await asyncio.to_thread(ImapClock, *bench.clock_login, bench.testbed_ca)
    rows = []
    try:
        for _ in range(runs):
            tag = make_tag(
                config.tag_secret.get().encode(), instance=config.instance, target=target.name
            )
            message = build_message(tag=tag, mail_from=SENDER, rcpt_to=bench.rcpt_to)
            landed: list[float | None] = []
            spy = threading.Thread(target=_spy, args=(clock, tag.nonce, landed))
            spy.start()
            future = watch.expect(tag, time.monotonic())
            outcome = await send_probe(
                target.smtp, mail_from=SENDER, rcpt_to=bench.rcpt_to, message=message
            )
            found = await asyncio.wait_for(future, 30)
            await asyncio.to_thread(spy.join)
            if landed[0] is None:
                raise SystemExit("the reference client never saw the probe")
            rows.append(
                (
                    found.detected_at - outcome.accepted_at,  # what the probe reports
                    landed[0] - outcome.accepted_at,  # when the mailbox first held it
                    found.detected_at - landed[0],  # detection overhead
                )
            )
            await asyncio.sleep(bench.pause)
    finally:
        await watch.stop()
        clock.close()
    return rows


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def header(bench: Bench, width: int) -> str:
    line = (
        f"{bench.column:{width}} {'runs':>4} {'reported median':>16} "
        f"{bench.landing + ' median':>15} {'overhead median':>16} {'overhead p95':>13}"
    )
    return line + (f" {'requests/probe':>15}" if bench.requests else "")


def row(name: str, width: int, rows: list[tuple], requests: int | None) -> str:
    reported, landing, overhead = (list(col) for col in zip(*rows, strict=True))
    line = (
        f"{name:{width}} {len(rows):>4} {statistics.median(reported):>15.3f}s "
        f"{statistics.median(landing):>14.3f}s {statistics.median(overhead) * 1000:>14.1f}ms "
        f"{p95(overhead) * 1000:>11.1f}ms"
    )
    return line + (f" {requests / len(rows):>15.1f}" if requests is not None else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="probes per mode (default 30)")
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="imap",
        help="watch the mailbox over IMAP (default) or over Graph through the local stand-in",
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("TB_STATE_DIR", "/tmp/relayprobe-testbed"),
        help="the testbed's state directory (default $TB_STATE_DIR or /tmp/relayprobe-testbed)",
    )
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2 (the p95 needs two values)")
    subprocess.run([str(ROOT / "tests/testbed/tb"), "start"], check=True, capture_output=True)
    bench = PROTOCOLS[args.protocol](Path(args.state_dir))
    width = max(map(len, bench.modes))
    print(header(bench, width))
    try:
        for name, new_watch in bench.modes.items():
            before = bench.requests() if bench.requests else 0
            rows = asyncio.run(measure(bench, new_watch, args.runs))
            requests = bench.requests() - before if bench.requests else None
            print(row(name, width, rows, requests))
    finally:
        for close in bench.close:
            close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
