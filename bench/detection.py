"""Detection overhead: the probe's reported delivery time minus the real landing time in the mailbox.

Runs against the local Postfix/Dovecot mail system (tests/testbed; started if it is not up).
The landing time is when a reference client on its own connection (NOOP + UID SEARCH every
10 ms) first sees the probe: the earliest an IMAP client can. The probe's own detection is
the watcher's ``detected_at``; times are relative to the relay's 250 reply to DATA.

    .venv/bin/python bench/detection.py --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probe import imap  # noqa: E402
from probe.config import parse_config  # noqa: E402
from probe.imap.watch import MailboxWatch  # noqa: E402
from probe.imap.watcher import WatchSettings  # noqa: E402
from probe.message import build_message  # noqa: E402
from probe.smtp.submission import send_probe  # noqa: E402
from probe.tag import make_tag  # noqa: E402

USER, PASSWORD = "probe@probe.test", "ProbePass-1"


class ImapClock:
    """A reference client: NOOP + UID SEARCH every 10 ms on its own connection.

    It notes the monotonic time the probe first becomes visible over IMAP, the earliest any IMAP
    client can see it. (Watching Dovecot's maildir directly was tried first: a 1 ms directory
    poll made Dovecot's own IDLE notifications stop, so it disturbed what it measured.)
    """

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.client = imap.connect(cfg)
        status = self.client.select_folder(cfg.folder, readonly=True)
        self.last = int(status[b"UIDNEXT"]) - 1

    def wait_for(self, nonce: str, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        field = b"BODY[HEADER.FIELDS (X-RELAYPROBE-TAG)]"
        while time.monotonic() < deadline:
            self.client.noop()
            seen_at = time.monotonic()
            new = [u for u in self.client.search(["UID", f"{self.last + 1}:*"]) if u > self.last]
            if new:
                self.last = max(new)
                for data in self.client.fetch(
                    new, [b"BODY.PEEK[HEADER.FIELDS (X-RELAYPROBE-TAG)]"]
                ).values():
                    if nonce.encode() in data.get(field, b""):
                        return seen_at
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self.client.logout()


def _spy(clock: ImapClock, nonce: str, out: list[float | None]) -> None:
    out.append(clock.wait_for(nonce))


def config_for(state_dir: Path):  # type: ignore[no-untyped-def]
    ca = str(state_dir / "tls" / "ca.crt")
    data = {
        "instance": "bench",
        "tag_secret": "bench-tag-secret-0123456789abcdef",
        "targets": [
            {
                "name": "bench",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": 10587,
                    "ca_file": ca,
                    "auth": {"method": "password", "username": USER, "password": PASSWORD},
                },
                "mail_from": USER,
                "rcpt_to": USER,
                "mailbox": {
                    "host": "127.0.0.1",
                    "port": 10993,
                    "ca_file": ca,
                    "auth": {"method": "password", "username": USER, "password": PASSWORD},
                },
                "junk_folders": [],
                "timeout": "30s",
            }
        ],
    }
    return parse_config(data, base_dir=ROOT)


async def measure(config, settings: WatchSettings, runs: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    target = config.targets[0]
    watch = MailboxWatch(
        target.mailbox,
        target.junk_folders,
        secret=config.tag_secret.get().encode(),
        instance=config.instance,
        settings=settings,
    )
    await watch.start()
    clock = await asyncio.to_thread(ImapClock, target.mailbox)
    rows = []
    try:
        for _ in range(runs):
            tag = make_tag(config.tag_secret.get().encode(), instance="bench", target="bench")
            message = build_message(tag=tag, mail_from=USER, rcpt_to=USER)
            landed: list[float | None] = []
            spy = threading.Thread(target=_spy, args=(clock, tag.nonce, landed))
            spy.start()
            future = watch.expect(tag, time.monotonic())
            outcome = await send_probe(target.smtp, mail_from=USER, rcpt_to=USER, message=message)
            found = await asyncio.wait_for(future, 30)
            await asyncio.to_thread(spy.join)
            if landed[0] is None:
                raise SystemExit("the reference client never saw the probe")
            rows.append(
                (
                    found.detected_at - outcome.accepted_at,  # what the probe reports
                    landed[0] - outcome.accepted_at,  # when it became visible over IMAP
                    found.detected_at - landed[0],  # detection overhead
                )
            )
            await asyncio.sleep(0.2)
    finally:
        await watch.stop()
        clock.close()
    return rows


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--state-dir", default=os.environ.get("TB_STATE_DIR", "/tmp/relayprobe-testbed")
    )
    args = parser.parse_args()
    state_dir = Path(args.state_dir)
    subprocess.run([str(ROOT / "tests/testbed/tb"), "start"], check=True, capture_output=True)
    config = config_for(state_dir)
    modes = {
        "fast NOOP polls, then IDLE (default)": WatchSettings(),
        "IDLE only": WatchSettings(fast_window=0.0),
    }
    print(
        f"{'mode':40} {'runs':>4} {'reported median':>16} {'visible median':>15} "
        f"{'overhead median':>16} {'overhead p95':>13}"
    )
    for name, settings in modes.items():
        rows = asyncio.run(measure(config, settings, args.runs))
        reported, landing, overhead = (list(col) for col in zip(*rows, strict=True))
        print(
            f"{name:40} {len(rows):>4} {statistics.median(reported):>15.3f}s "
            f"{statistics.median(landing):>14.3f}s {statistics.median(overhead) * 1000:>14.1f}ms "
            f"{p95(overhead) * 1000:>11.1f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
