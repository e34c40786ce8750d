"""Three shards on one config of 30 tenant targets: each target probed by one shard, few move at
four, and a killed shard's targets raise RelayProbeShardMissing in a real Prometheus."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporters.shards import assignment
from tests.system.daemon_helpers import (
    ROOT,
    Daemon,
    http,
    ready,
    running_prometheus,
    start_daemon,
    stop,
    value,
    wait_for,
)
from tests.system.probe_configs import target_dict

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

RULES = ROOT / "helm" / "rules" / "relayprobe.rules.yml"
SHARDS = 3
NAMES = [f"t{i:02d}" for i in range(30)]
# Tenant mailboxes of the testbed (tests/testbed/README.md "Users") that bench/scale.py's default
# runs (tenant0001 up) do not use: tenant0551 ... tenant0580, each probing itself.
FIRST_TENANT = 551


def tenant(i: int) -> str:
    return f"tenant{FIRST_TENANT + i:04d}@probe.test"


def config_doc(tb: Any, instance: str) -> dict[str, Any]:
    targets = []
    for i, name in enumerate(NAMES):
        user, password = tenant(i), f"${{TB_TENANT_{i:02d}_PASSWORD}}"
        auth = {"method": "password", "username": user, "password": password}
        t = target_dict(
            tb,
            name,
            mail_from=user,
            rcpt_to=user,
            smtp={"auth": auth},
            mailbox={"auth": auth},
            # A long interval (first runs spread over it): each target runs once or twice.
            interval="30s",
            jitter=0,
            timeout="20s",
        )
        targets.append(t)
    return {"instance": instance, "tag_secret": "${TB_TAG_SECRET}", "targets": targets}


def tenant_env() -> dict[str, str]:
    return {f"TB_TENANT_{i:02d}_PASSWORD": f"TenantPass-{FIRST_TENANT + i}" for i in range(30)}


@pytest.fixture(scope="module")
def shards(testbed, tmp_path_factory) -> Iterator[list[Daemon]]:
    instance = f"test-shards-{os.getpid()}-{int(time.time()) % 100000}"
    doc = config_doc(testbed, instance)
    daemons = []
    try:
        for i in range(SHARDS):
            tmp = tmp_path_factory.mktemp(f"shard{i}")
            daemons.append(
                start_daemon(
                    testbed,
                    tmp,
                    doc,
                    "--shard",
                    f"{i}/{SHARDS}",
                    "--shutdown.grace",
                    "5",
                    env=tenant_env(),
                )
            )
        for d in daemons:
            wait_for("/-/ready", lambda d=d: ready(d), 30)
        yield daemons
    finally:
        for d in daemons:
            stop(d.proc)


def probed(d: Daemon) -> set[str]:
    """Targets this daemon has run (a result with a start time)."""
    return {name for name, r in d.results().items() if r.get("started_at")}


def test_every_target_is_probed_by_exactly_one_shard(shards: list[Daemon]) -> None:
    owners = assignment(NAMES, SHARDS)

    def all_probed() -> list[set[str]] | None:
        seen = [probed(d) for d in shards]
        return seen if set().union(*seen) == set(NAMES) else None

    seen = wait_for("every target to be probed by some shard", all_probed, 90)
    assert isinstance(seen, list)
    for name in NAMES:
        by = [i for i, names in enumerate(seen) if name in names]
        assert by == [owners[name]], f"{name} probed by shards {by}, owner {owners[name]}"
    for i, d in enumerate(shards):
        results = d.results()
        # A shard reports only its own targets, and they reach their tenant mailbox.
        assert set(results) == {n for n in NAMES if owners[n] == i}
        failed = {n: r["message"] for n, r in results.items() if n in seen[i] and not r["success"]}
        assert failed == {}, failed
        m = d.metrics()
        assert value(m, "relayprobe_shard_info", shard=str(i), shards=str(SHARDS)) == 1
        told = {
            n for n in NAMES if value(m, "relayprobe_target_shard", target=n, shard=str(owners[n]))
        }
        assert told == set(NAMES)  # every shard exports the whole assignment
        status, body, _ = http(f"{d.url}/")
        assert status == 200 and f"{d.instance}-shard-{i}" in body  # its own instance name


def test_four_shards_move_at_most_a_quarter_plus_two(shards: list[Daemon]) -> None:
    three, four = assignment(NAMES, 3), assignment(NAMES, 4)
    moved = [n for n in NAMES if three[n] != four[n]]
    assert len(moved) <= math.ceil(30 / 4) + 2
    assert all(four[n] == 3 for n in moved)  # only to the new shard, none between old ones
    # The daemon agrees: `run --shard I/4 --config.check` keeps exactly the function's share.
    config = shards[0].config
    env = {**os.environ, "TB_TAG_SECRET": "x" * 32, **tenant_env()}
    counts = []
    for i in range(4):
        out = subprocess.run(
            [
                *(sys.executable, "-m", "exporters.daemon", "--config.file", str(config)),
                *("--shard", f"{i}/4", "--config.check"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0 and f"shard {i} of 4" in out.stdout, out.stdout + out.stderr
        counts.append(int(out.stdout.split("ok (")[1].split()[0]))
    assert counts == [sum(1 for n in NAMES if four[n] == i) for i in range(4)]
    assert sum(counts) == 30  # none lost, none twice


def test_a_killed_shards_targets_raise_shard_missing(shards: list[Daemon], tmp_path: Path) -> None:
    addresses = [d.url.removeprefix("http://") for d in shards]
    with running_prometheus(tmp_path, addresses, job="mail-probes", rules=RULES) as prom:

        def scraped_all() -> bool:
            try:
                got = prom.get("/api/v1/query", query="count(relayprobe_shard_info)")["result"]
            except OSError:
                return False
            return bool(got) and got[0]["value"][1] == str(SHARDS)

        wait_for("Prometheus to scrape the three shards", scraped_all, 60)
        time.sleep(3)  # a few rule evaluations with every shard up
        assert prom.shard_alerts() == {}, "ShardMissing before any shard was killed"
        killed = 1
        shards[killed].proc.send_signal(signal.SIGKILL)
        shards[killed].proc.wait(10)
        owned = {n for n, s in assignment(NAMES, SHARDS).items() if s == killed}

        def alerted() -> dict[str, tuple[str, str]] | None:
            got = prom.shard_alerts()
            return got if set(got) == owned else None

        got = wait_for("RelayProbeShardMissing for the killed shard's targets", alerted, 30)
        assert isinstance(got, dict)
        # Pending (for: 5m runs in promtool's test, helm/rules/tests/): the killed shard's
        # targets only, labelled with their shard; ExporterDown leaves the shard to it.
        assert {shard for shard, _ in got.values()} == {str(killed)}
        assert "RelayProbeExporterDown" not in prom.alert_names()
