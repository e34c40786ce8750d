"""Detection overhead: the probe's reported delivery time minus the real landing time in the mailbox.

Runs against the local Postfix/Dovecot mail system (tests/testbed; started if it is not up).
The real landing time is taken from Dovecot's maildir: a thread lists ``new/`` and ``cur/``
every millisecond and notes when the probe's file appears (LMTP writes it there), which no
IMAP client can see sooner. The probe's own detection is the watcher's ``detected_at``.

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

from probe.config import parse_config  # noqa: E402
from probe.mailbox import MailboxWatch  # noqa: E402
from probe.message import build_message  # noqa: E402
from probe.smtp import send_probe  # noqa: E402
from probe.tag import make_tag  # noqa: E402
from probe.watcher import WatchSettings  # noqa: E402

USER, PASSWORD = "probe@probe.test", "ProbePass-1"


class MaildirClock:
    """Notes the monotonic time a file whose content holds ``marker`` appears in a maildir."""

    def __init__(self, maildir: Path) -> None:
        self.dirs = [maildir / "new", maildir / "cur"]
        self.seen = {name for d in self.dirs for name in _list(d)}

    def wait_for(self, marker: bytes, timeout: float = 30.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            for d in self.dirs:
                for name in _list(d):
                    if name in self.seen:
                        continue
                    try:
                        content = (d / name).read_bytes()
                    except FileNotFoundError:  # moved new/ -> cur/ between list and read
                        continue
                    if marker in content:
                        self.seen.add(name)
                        return now
            time.sleep(0.001)
        return None


def _spy(clock: MaildirClock, marker: bytes, out: list[float | None]) -> None:
    out.append(clock.wait_for(marker))


def _list(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:  # Dovecot creates new/ and cur/ on first delivery
        return []


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


async def measure(config, maildir: Path, settings: WatchSettings, runs: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    target = config.targets[0]
    watch = MailboxWatch(
        target.mailbox,
        target.junk_folders,
        secret=config.tag_secret.get().encode(),
        instance=config.instance,
        settings=settings,
    )
    await watch.start()
    rows = []
    try:
        for _ in range(runs):
            tag = make_tag(config.tag_secret.get().encode(), instance="bench", target="bench")
            message = build_message(tag=tag, mail_from=USER, rcpt_to=USER)
            clock = MaildirClock(maildir)
            landed: list[float | None] = []
            spy = threading.Thread(target=_spy, args=(clock, tag.nonce.encode(), landed))
            spy.start()
            future = watch.expect(tag, time.monotonic())
            outcome = await send_probe(target.smtp, mail_from=USER, rcpt_to=USER, message=message)
            found = await asyncio.wait_for(future, 30)
            await asyncio.to_thread(spy.join)
            if landed[0] is None:
                raise SystemExit("the maildir spy never saw the probe land")
            rows.append(
                (
                    found.detected_at - outcome.accepted_at,  # what the probe reports
                    landed[0] - outcome.accepted_at,  # when it really landed
                    found.detected_at - landed[0],  # detection overhead
                )
            )
            await asyncio.sleep(0.2)
    finally:
        await watch.stop()
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
    maildir = state_dir / "mail" / "probe.test" / "probe" / "Maildir"
    config = config_for(state_dir)
    modes = {
        "fast NOOP polls, then IDLE (default)": WatchSettings(),
        "IDLE only": WatchSettings(fast_window=0.0),
    }
    print(
        f"{'mode':40} {'runs':>4} {'reported median':>16} {'landing median':>15} "
        f"{'overhead median':>16} {'overhead p95':>13}"
    )
    for name, settings in modes.items():
        rows = asyncio.run(measure(config, maildir, settings, args.runs))
        reported, landing, overhead = (list(col) for col in zip(*rows, strict=True))
        print(
            f"{name:40} {len(rows):>4} {statistics.median(reported):>15.3f}s "
            f"{statistics.median(landing):>14.3f}s {statistics.median(overhead) * 1000:>14.1f}ms "
            f"{p95(overhead) * 1000:>11.1f}ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
