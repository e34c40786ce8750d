"""Scale/soak bench: `relayprobe run` with N targets against the local testbed; CPU, RSS, fds, /metrics.

Usage (testbed running, see tests/testbed): .venv/bin/python bench/scale.py --targets 200 --interval 60
--duration 240. Prints samples while it runs and a summary at the end; the daemon is stopped with
SIGTERM and its exit code reported.
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


def config(n: int, interval: float, timeout: float, instance: str) -> dict:
    def target(i: int) -> dict:
        tls = {"host": "127.0.0.1", "ca_file": str(CA), "timeout": "10s"}
        return {
            "name": f"t{i:03d}",
            "smtp": {
                **tls,
                "port": 10587,
                "security": "starttls",
                "auth": {
                    "method": "password",
                    "username": "probe@probe.test",
                    "password": "${TB_PROBE_PASSWORD}",
                },
            },
            "mail_from": "probe@probe.test",
            "rcpt_to": "inbox@probe.test",
            "mailbox": {
                **tls,
                "port": 10993,
                "security": "tls",
                "auth": {
                    "method": "password",
                    "username": "inbox@probe.test",
                    "password": "${TB_INBOX_PASSWORD}",
                },
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
    args = p.parse_args()
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


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relayprobe-bench-"))
    instance = f"bench-{os.getpid()}"
    (tmp / "c.yml").write_text(
        yaml.safe_dump(config(args.targets, args.interval, args.timeout, instance))
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TB_PROBE_PASSWORD": "ProbePass-1",
        "TB_INBOX_PASSWORD": "InboxPass-1",
        "TB_TAG_SECRET": "relayprobe-bench-tag-secret-0123456789",
    }
    cmd = [
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
    log = tmp / "daemon.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        for _ in range(100):
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
            f"{'t':>6} {'runs':>7} {'ok':>5} {'cpu_s':>7} {'rss_mb':>7} {'fds':>4} {'thr':>4} {'scrape_ms':>9}"
        )
        while time.monotonic() - start < args.duration:
            time.sleep(args.sample_every)
            ms, totals = scrape(url)
            scrape_ms.extend(scrape(url)[0] for _ in range(4))
            scrape_ms.append(ms)
            sample = {**proc_sample(daemon.pid), "t": time.monotonic() - start, **totals}
            samples.append(sample)
            if base is None and sample["t"] >= warmup:
                base, base_runs = sample, totals.get("relayprobe_runs_total", 0)
            print(
                f"{sample['t']:6.0f} {totals.get('relayprobe_runs_total', 0):7.0f} "
                f"{totals.get('relayprobe_success', 0):5.0f} {sample['cpu_s']:7.2f} "
                f"{sample['rss_mb']:7.1f} {sample['fds']:4d} {sample['threads']:4d} {ms:9.1f}",
                flush=True,
            )
        elapsed = time.monotonic() - start
        last = samples[-1]
        runs = last.get("relayprobe_runs_total", 0)
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
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
            "threads_end": last["threads"],
            "metrics_ms_median": round(statistics.median(scrape_ms), 1),
            "metrics_ms_p95": round(quantiles[18], 1),
        }
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            rc = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            rc = daemon.wait()
    summary["exit_code"] = rc
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
