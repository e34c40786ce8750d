"""Scale/soak bench: `relayprobe run` with N targets against the local testbed; CPU, RSS, fds, /metrics.

Usage (testbed running, see tests/testbed): .venv/bin/python bench/scale.py --targets 200 --interval 60
--duration 240. Prints samples while it runs and a summary at the end; the daemon is stopped with
SIGTERM and its exit code reported.

``--mailboxes distinct``: target i sends as and delivers to its own tenant mailbox
(tenant<i>@probe.test, made by the testbed: tests/testbed/README.md "Users"), the service-provider
case of issue 17; ``--mailboxes shared`` (default): every target sends as probe@ into inbox@.
``--shards N`` runs N daemons on the one config with ``--shard I/N`` and sums their figures.
``--cpu-list 1`` pins the daemons to CPU 1 (taskset) for a one-core figure.

    .venv/bin/python bench/scale.py --mailboxes distinct --targets 500 --interval 300 \
        --duration 900 --cpu-list 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
CA = Path("/tmp/relayprobe-testbed/tls/ca.crt")
TICKS = os.sysconf("SC_CLK_TCK")


#: The testbed's tenant mailboxes (tests/testbed/tbkit/config.py, README.md "Users").
TENANT_USER, TENANT_PASSWORD = "tenant%04d@probe.test", "TenantPass-%d"


def tenant_env(n: int) -> dict[str, str]:
    """TB_TENANT_<n>_PASSWORD for the first ``n`` tenants (the config names them, never inlines)."""
    return {f"TB_TENANT_{i:04d}_PASSWORD": TENANT_PASSWORD % i for i in range(1, n + 1)}


def config(n: int, interval: float, timeout: float, instance: str, distinct: bool = False) -> dict:
    def target(i: int) -> dict:
        tls = {"host": "127.0.0.1", "ca_file": str(CA), "timeout": "10s"}
        if distinct:  # the tenant's own mailbox sends the probe and receives it
            sender = receiver = TENANT_USER % (i + 1)
            send_pw = recv_pw = f"${{TB_TENANT_{i + 1:04d}_PASSWORD}}"
        else:
            sender, receiver = "probe@probe.test", "inbox@probe.test"
            send_pw, recv_pw = "${TB_PROBE_PASSWORD}", "${TB_INBOX_PASSWORD}"
        return {
            "name": f"t{i:03d}",
            "smtp": {
                **tls,
                "port": 10587,
                "security": "starttls",
                "auth": {"method": "password", "username": sender, "password": send_pw},
            },
            "mail_from": sender,
            "rcpt_to": receiver,
            "mailbox": {
                **tls,
                "port": 10993,
                "security": "tls",
                "auth": {"method": "password", "username": receiver, "password": recv_pw},
            },
        }

    return {
        "instance": instance,
        "tag_secret": "${TB_TAG_SECRET}",
        "defaults": {"interval": interval, "timeout": timeout, "jitter": min(5.0, interval / 10)},
        "targets": [target(i) for i in range(n)],
    }


def proc_sample(pid: int) -> dict[str, float]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {
        "cpu_s": cpu,
        "rss_mb": rss / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
    }


def scrape(url: str) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        body = response.read().decode()
    elapsed = (time.perf_counter() - t0) * 1000
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name in (
                "relayprobe_runs_total",
                "relayprobe_success",
                "relayprobe_late_deliveries_total",
            ):
                totals[s.name] = totals.get(s.name, 0) + s.value
            elif s.name == "relayprobe_failures_total":
                key = f"fail:{s.labels['reason']}"
                totals[key] = totals.get(key, 0) + s.value
    return elapsed, totals


def imap_connections(pids: list[int]) -> int:
    """Established TCP connections of ``pids`` to the testbed's IMAP port (ss -tnp)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dport", "=", ":10993"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return sum(1 for line in out.splitlines() for pid in pids if f"pid={pid}," in line)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=50)
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=180.0)
    p.add_argument(
        "--warmup", type=float, default=None, help="seconds before CPU/probe is measured"
    )
    p.add_argument("--max-per-minute", type=int, default=100000)
    p.add_argument("--max-connections", type=int, default=3)
    p.add_argument("--sample-every", type=float, default=10.0)
    p.add_argument(
        "--mailboxes",
        choices=["shared", "distinct"],
        default="shared",
        help="shared: every target probe@ -> inbox@; distinct: target i uses tenant<i>@",
    )
    p.add_argument("--shards", type=int, default=1, help="daemons, each run with --shard I/N")
    p.add_argument("--cpu-list", default=None, help="pin the daemons with taskset -c LIST")
    args = p.parse_args()
    if args.mailboxes == "distinct" and args.targets > 600:
        p.error("the testbed has 600 tenant mailboxes (tests/testbed/README.md)")
    lease = testbed_lease()
    try:
        return run(args)
    finally:
        lease()


def testbed_lease():  # type: ignore[no-untyped-def]
    """Start (or share) the testbed the way the pytest fixture does, with a lease of our own."""
    sys.path.insert(0, str(ROOT))
    from tests.testbed.api import leases_dir, run_tb
    from tests.testbed.fixture import _release
    from tests.testbed.tbkit import config as tbconfig

    state, me = tbconfig.state_dir(), os.getpid()
    leases = leases_dir(state)
    leases.mkdir(parents=True, exist_ok=True)
    (leases / str(me)).write_text("")
    output = run_tb(state, "start", "--owner", str(me))
    owner = state / "owner"
    started = "already up" not in output and owner.exists() and owner.read_text().strip() == str(me)
    return lambda: _release(state, me, started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sum(samples: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for sample in samples:
        for key, value in sample.items():
            total[key] = total.get(key, 0) + value
    return total


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relayprobe-bench-"))
    instance = f"bench-{os.getpid()}"
    distinct = args.mailboxes == "distinct"
    doc = config(args.targets, args.interval, args.timeout, instance, distinct)
    (tmp / "c.yml").write_text(yaml.safe_dump(doc))
    env = {
        **os.environ,
        "TB_PROBE_PASSWORD": "ProbePass-1",
        "TB_INBOX_PASSWORD": "InboxPass-1",
        "TB_TAG_SECRET": "relayprobe-bench-tag-secret-0123456789",
        **(tenant_env(args.targets) if distinct else {}),
    }
    pin = ["taskset", "-c", args.cpu_list] if args.cpu_list else []
    daemons: list[subprocess.Popen[bytes]] = []
    urls, logs = [], []
    for shard in range(args.shards):
        port = _free_port()
        cmd = [
            *pin,
            sys.executable,
            "-m",
            "exporters.daemon",
            "--config.file",
            str(tmp / "c.yml"),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.format",
            "json",
            "--smtp.max-messages-per-minute",
            str(args.max_per_minute),
            "--smtp.max-connections",
            str(args.max_connections),
        ]
        if args.shards > 1:
            cmd += ["--shard", f"{shard}/{args.shards}"]
        log = tmp / f"daemon-{shard}.log"
        with open(log, "wb") as out:
            daemons.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out))
        urls.append(f"http://127.0.0.1:{port}")
        logs.append(log)
    pids = [d.pid for d in daemons]
    summary: dict[str, object] = {}
    try:
        for url in urls:
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/-/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
        start = time.monotonic()
        warmup = args.warmup if args.warmup is not None else min(args.interval, args.duration / 3)
        base: dict[str, float] | None = None
        base_runs = 0.0
        samples, scrape_ms = [], []
        print(
            f"{'t':>6} {'runs':>7} {'ok':>5} {'cpu_s':>7} {'rss_mb':>7} {'fds':>5} {'thr':>4} "
            f"{'imap':>5} {'scrape_ms':>9}"
        )
        while time.monotonic() - start < args.duration:
            time.sleep(args.sample_every)
            scraped = [scrape(url) for url in urls]
            ms = statistics.median(m for m, _ in scraped)
            totals = _sum([t for _, t in scraped])
            scrape_ms.extend(scrape(urls[0])[0] for _ in range(4))
            scrape_ms.append(scraped[0][0])
            procs = _sum([proc_sample(pid) for pid in pids])
            sample = {
                **procs,
                "imap": imap_connections(pids),
                "t": time.monotonic() - start,
                **totals,
            }
            samples.append(sample)
            if base is None and sample["t"] >= warmup:
                base, base_runs = sample, totals.get("relayprobe_runs_total", 0)
            print(
                f"{sample['t']:6.0f} {totals.get('relayprobe_runs_total', 0):7.0f} "
                f"{totals.get('relayprobe_success', 0):5.0f} {sample['cpu_s']:7.2f} "
                f"{sample['rss_mb']:7.1f} {sample['fds']:5.0f} {sample['threads']:4.0f} "
                f"{sample['imap']:5.0f} {ms:9.1f}",
                flush=True,
            )
        elapsed = time.monotonic() - start
        last = samples[-1]
        runs = last.get("relayprobe_runs_total", 0)
        lines = [
            json.loads(x) for log in logs for x in log.read_text().splitlines() if x.startswith("{")
        ]
        skipped = sum(1 for e in lines if e["msg"].startswith("scheduled run skipped"))
        expected = args.targets * (elapsed / args.interval)
        cpu_per_probe = (
            (last["cpu_s"] - base["cpu_s"]) * 1000 / max(1, runs - base_runs)
            if base
            else float("nan")
        )
        quantiles = statistics.quantiles(scrape_ms, n=20)
        mid = samples[len(samples) // 2]
        summary = {
            "targets": args.targets,
            "mailboxes": args.mailboxes,
            "shards": args.shards,
            "cpu_list": args.cpu_list,
            "interval_s": args.interval,
            "elapsed_s": round(elapsed, 1),
            "runs": runs,
            "expected_runs_approx": round(expected, 1),
            "skipped_schedules": skipped,
            "skipped_pct": round(100 * skipped / max(1, runs + skipped), 2),
            "failures": {k: v for k, v in last.items() if k.startswith("fail:")},
            "late_deliveries": last.get("relayprobe_late_deliveries_total", 0),
            "cpu_ms_per_probe": round(cpu_per_probe, 1),
            "cpu_s_total": round(last["cpu_s"], 2),
            "rss_mb_mid_end": [round(mid["rss_mb"], 1), round(last["rss_mb"], 1)],
            "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
            "fds_mid_end": [mid["fds"], last["fds"]],
            "fds_max": max(s["fds"] for s in samples),
            "threads_max": max(s["threads"] for s in samples),
            "threads_end": last["threads"],
            "imap_connections_median_max": [
                statistics.median(s["imap"] for s in samples),
                max(s["imap"] for s in samples),
            ],
            "metrics_ms_median": round(statistics.median(scrape_ms), 1),
            "metrics_ms_p95": round(quantiles[18], 1),
        }
        if args.shards > 1:
            summary["per_shard_targets"] = shard_split(urls)
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = []
        for daemon in daemons:
            try:
                codes.append(daemon.wait(30))
            except subprocess.TimeoutExpired:
                daemon.kill()
                codes.append(daemon.wait())
    summary["exit_codes"] = codes
    print(json.dumps(summary, indent=1))
    return 0


def shard_split(urls: list[str]) -> dict[str, object]:
    """How many targets each shard probed, and whether any target ran on two shards."""
    seen: dict[str, list[int]] = {}
    for shard, url in enumerate(urls):
        with urllib.request.urlopen(url + "/api/results", timeout=10) as response:
            for r in json.loads(response.read())["results"]:
                if r.get("started_at"):
                    seen.setdefault(r["target"], []).append(shard)
    counts = [sum(1 for s in seen.values() if shard in s) for shard in range(len(urls))]
    return {"probed": counts, "on_two_shards": sorted(t for t, s in seen.items() if len(s) > 1)}


if __name__ == "__main__":
    sys.exit(main())
