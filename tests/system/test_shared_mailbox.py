"""Processes on one config (daemon, `relayprobe once`, check_m365_relay) keep to their own mail."""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imapclient
import pytest

from probe.config import Config
from probe.imap.watch import MailboxWatch
from probe.imap.watcher import Found, WatchSettings
from probe.message import build_message
from probe.result import Status
from probe.roundtrip import new_watch, run_probe
from probe.tag import PROCESS_RUN_ID, Tag, make_tag
from tests.system.daemon_helpers import TAG_SECRET, Samples, running_daemon, value, wait_for
from tests.system.probe_configs import make_config, target_dict

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

BIN = Path(sys.executable).parent
CHECKS, ONCES = 10, 5
# Each process watches the inbox and the junk folder (two IMAP connections), and the testbed's
# Dovecot allows 10 per user and address (mail_max_userip_connections): daemon 2 + 3 × 2.
AT_A_TIME = 3
# A mailbox no other test probes into (others use inbox@): their connections count too.
USER = "probe@probe.test"


def _failures(samples: Samples, target: str) -> float:
    return sum(
        v
        for (name, labels), v in samples.items()
        if name == "relayprobe_failures_total" and ("target", target) in labels
    )


def _run(cmd: list[str], env: dict[str, str]) -> tuple[list[str], int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return cmd, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def _left_behind(tb: Any, instance: str) -> int:
    """Probe mail of ``instance`` still in the inbox or junk folder."""
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    with imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30) as c:
        c.login(USER, tb.users[USER])
        count = 0
        for folder in ("INBOX", "Junk Email"):
            c.select_folder(folder, readonly=True)
            count += len(c.search(["HEADER", "X-Relayprobe-Tag", f"i={instance};", "UNDELETED"]))
        return count


def test_daemon_checks_and_once_runs_on_one_config_never_take_each_others_mail(
    testbed: Any, tmp_path: Path
) -> None:
    # Issue 11, item 4: the daemon deleted a concurrent check's probe as its own late mail and
    # the check timed out (docs/architecture.md, "Cleanup and nothing is lost").
    instance = f"test-shared-{os.getpid()}-{secrets.token_hex(3)}"
    target = target_dict(
        testbed,
        "relay",
        interval="3s",
        jitter=0,
        rcpt_to=USER,
        mailbox={
            "auth": {"method": "password", "username": USER, "password": "${TB_PROBE_PASSWORD}"}
        },
    )
    doc = {"instance": instance, "tag_secret": "${TB_TAG_SECRET}", "targets": [target]}
    env = {
        "PATH": os.environ["PATH"],
        "TB_PROBE_PASSWORD": testbed.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": testbed.users["inbox@probe.test"],
        "TB_TAG_SECRET": TAG_SECRET,
    }
    with running_daemon(testbed, tmp_path, doc, "--shutdown.grace", "20") as d:
        cfg = str(d.config)  # the very file the daemon runs on
        wait_for(
            "the daemon's first successful run",
            lambda: value(d.metrics(), "relayprobe_success", target="relay") == 1,
            30,
        )
        before = d.metrics()
        check = [str(BIN / "check_m365_relay"), "--config", cfg, "--target", "relay"]
        once = [str(BIN / "relayprobe"), "once", "--config", cfg, "--target", "relay"]
        # Interleaved so that checks and once runs overlap each other and the daemon's runs.
        cmds = [check, check, once] * ONCES
        assert (cmds.count(check), cmds.count(once)) == (CHECKS, ONCES)
        t0 = time.monotonic()
        with ThreadPoolExecutor(AT_A_TIME) as pool:
            runs = list(pool.map(lambda c: _run(c, env), cmds))
        took = time.monotonic() - t0
        # One more daemon run after the last check, so a probe it had in flight is judged.
        runs_done = value(d.metrics(), "relayprobe_runs_total", target="relay") or 0
        wait_for(
            "one more daemon run",
            lambda: (value(d.metrics(), "relayprobe_runs_total", target="relay") or 0) > runs_done,
            30,
        )
        after = d.metrics()
    left = _left_behind(testbed, instance)

    bad = [f"{' '.join(c[:2])} exit {code}:\n{out}" for c, code, out, _ in runs if code != 0]
    assert not bad, "\n".join(bad)
    runs_before = value(before, "relayprobe_runs_total", target="relay") or 0
    daemon_runs = (value(after, "relayprobe_runs_total", target="relay") or 0) - runs_before
    durations = sorted(s for *_, s in runs)
    print(
        f"shared config: {CHECKS} checks + {ONCES} once runs, {AT_A_TIME} at a time, in "
        f"{took:.1f} s (each {durations[0]:.1f}-{durations[-1]:.1f} s); daemon runs: "
        f"{runs_done - runs_before:g} during, {daemon_runs:g} in all, late "
        f"{value(after, 'relayprobe_late_deliveries_total', target='relay'):g}, failures "
        f"{_failures(after, 'relay'):g}; probe mail left: {left}"
    )
    assert runs_done > runs_before  # the daemon sent while the others ran
    assert value(after, "relayprobe_late_deliveries_total", target="relay") == 0
    assert _failures(after, "relay") == 0
    assert value(after, "relayprobe_success", target="relay") == 1
    assert left == 0


def _append(tb: Any, *messages: bytes) -> None:
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    with imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30) as c:
        c.login(USER, tb.users[USER])
        for message in messages:
            c.append("INBOX", message)


def _present(tb: Any, *tags: Tag) -> list[bool]:
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    with imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30) as c:
        c.login(USER, tb.users[USER])
        c.select_folder("INBOX", readonly=True)
        return [bool(c.search(["SUBJECT", t.probe_id, "UNDELETED"])) for t in tags]


def _remove(tb: Any, *tags: Tag) -> None:
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    with imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30) as c:
        c.login(USER, tb.users[USER])
        c.select_folder("INBOX")
        for tag in tags:
            uids = c.search(["SUBJECT", tag.probe_id])
            if uids:
                c.delete_messages(uids)
                c.uid_expunge(uids)


def _config(tb: Any) -> Config:
    mailbox = {"auth": {"method": "password", "username": USER, "password": "${TB_PROBE_PASSWORD}"}}
    return make_config(tb, target_dict(tb, rcpt_to=USER, mailbox=mailbox))


async def test_whose_mail_a_run_takes(testbed: Any) -> None:
    # docs/architecture.md, "Cleanup and nothing is lost": a run takes (deletes, counts as late)
    # only its own run's mail; another run's only once provably stale, and without counting it.
    config = _config(testbed)
    target = config.targets[0]
    secret = config.tag_secret.get().encode()
    hours_ago = time.time() - 2 * 3600  # past new_watch's stale age, max(1 h, 2 × 20 s)

    def tag(run: str | None, now: float | None = None) -> Tag:
        return make_tag(secret, instance=config.instance, target=target.name, run=run, now=now)

    fresh_other, stale_other = tag("other-run"), tag("other-run", hours_ago)
    fresh_daemon, stale_daemon = tag(None), tag(None, hours_ago)
    own_late = tag(PROCESS_RUN_ID)  # this process's run id, as a `once` run would send it
    tags = (fresh_other, stale_other, fresh_daemon, stale_daemon, own_late)
    _append(testbed, *(build_message(tag=t, mail_from=USER, rcpt_to=USER) for t in tags))
    try:
        # A short-lived run (the process's run id, as `once` and the Nagios check have).
        result = await run_probe(config, target)
        assert result.status is Status.OK, result.message
        assert result.arrival.late_count == 1  # own_late only: stale ones are nobody's late mail
        assert _present(testbed, *tags) == [True, False, True, False, False]

        # The daemon's watch (run id None) owns tags without a run id, old ones included.
        watch = new_watch(config, target)
        await watch.start()
        try:
            result = await run_probe(config, target, watch=watch)
        finally:
            await watch.stop()
        assert result.status is Status.OK, result.message
        assert result.arrival.late_count == 1  # fresh_daemon, found at start-up
        assert _present(testbed, fresh_other, fresh_daemon) == [True, False]
    finally:
        _remove(testbed, *tags)


async def test_long_lived_watch_sweeps_mail_that_went_stale_while_watched(testbed: Any) -> None:
    # Another run's mail that arrives fresh is left alone; the periodic re-sweep removes it once
    # stale, so a crashed `once` leaves nothing behind even if only the daemon runs afterwards.
    config = _config(testbed)
    target = config.targets[0]
    secret = config.tag_secret.get().encode()
    other = make_tag(secret, instance=config.instance, target=target.name, run="crashed-run")
    late: list[Found] = []
    watch = MailboxWatch(
        target.mailbox,
        [],
        secret=secret,
        instance=config.instance,
        on_late=late.append,
        settings=WatchSettings(resweep_interval=0.5),
        stale_after=3.0,
    )
    await watch.start()
    try:
        _append(testbed, build_message(tag=other, mail_from=USER, rcpt_to=USER))
        await asyncio.sleep(1.5)
        assert _present(testbed, other) == [True]  # seen while fresh: left alone
        t0 = time.monotonic()
        while _present(testbed, other) == [True]:
            assert time.monotonic() - t0 < 15, "the stale mail of another run was not swept"
            await asyncio.sleep(0.25)
        assert late == [] and not watch.late
    finally:
        await watch.stop()
        _remove(testbed, other)
