"""Run the real exporter daemon (`python -m exporters.daemon`) and a real Prometheus for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TAG_SECRET = "relayprobe-test-tag-secret-0123456789"
PROMETHEUS = "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, *, method: str = "GET", timeout: float = 30) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(what: str, check: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    config: Path
    log: Path
    tb: Any
    instance: str

    def metrics(self) -> Samples:
        status, body, _ = http(f"{self.url}/metrics")
        assert status == 200, body
        return parse(body)

    def results(self) -> dict[str, dict[str, Any]]:
        """GET /api/results as {target: result}."""
        status, body, _ = http(f"{self.url}/api/results")
        assert status == 200, body
        return {r["target"]: r for r in json.loads(body)["results"]}

    def write_config(self, doc: dict | str) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
        self.config.write_text(text)

    def logs(self) -> list[dict]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]


def start_daemon(
    tb: Any, tmp: Path, doc: dict, *args: str, env: dict[str, str] | None = None
) -> Daemon:
    """Start the daemon on a free loopback port with the testbed passwords in its environment
    (``tb`` None: no testbed; ``env`` adds to or overrides the environment)."""
    config = tmp / "relayprobe.yml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    port = free_port()
    testbed = (
        {}
        if tb is None
        else {
            "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
            "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
            "TB_TAG_SECRET": TAG_SECRET,
        }
    )
    env = {**os.environ, **testbed, **(env or {})}
    log = tmp / "daemon.log"
    cmd = [
        sys.executable,
        "-m",
        "exporters.daemon",
        "--config.file",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.format",
        "json",
        *args,
    ]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=err, stderr=err)
    scheme = "https" if "--web.config.file" in args else "http"
    return Daemon(proc, f"{scheme}://127.0.0.1:{port}", config, log, tb, doc["instance"])


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


def ready(d: Daemon) -> bool:
    assert d.proc.poll() is None, f"daemon exited: {d.log.read_text()}"
    try:
        return http(f"{d.url}/-/ready", timeout=2)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_daemon(tb: Any, tmp: Path, doc: dict, *args: str) -> Iterator[Daemon]:
    """A started daemon that answers /-/ready; SIGTERM (then SIGKILL) on the way out."""
    d = start_daemon(tb, tmp, doc, *args)
    try:
        wait_for("/-/ready", lambda: ready(d), 20)
        yield d
    finally:
        stop(d.proc)


class Prometheus:
    """A real Prometheus's HTTP API; ``log`` is the file its output goes to."""

    def __init__(self, url: str, log: Path | None = None) -> None:
        self.url = url
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        status, body, _ = http(f"{self.url}{path}?{query}", timeout=5)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str, at: float | None = None) -> dict[str, float]:
        """An instant query's samples as {target: value}."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        return {
            r["metric"].get("target", ""): float(r["value"][1])
            for r in self.get("/api/v1/query", **params)["result"]
        }

    def query_range(self, promql: str, start: float, end: float, step: float) -> dict[str, dict]:
        data = self.get(
            "/api/v1/query_range",
            query=promql,
            start=f"{start:.3f}",
            end=f"{end:.3f}",
            step=str(step),
        )
        return {
            r["metric"].get("target", ""): {float(t): float(v) for t, v in r["values"]}
            for r in data["result"]
        }

    def scraped(self) -> bool:
        targets = self.get("/api/v1/targets", state="active")["activeTargets"]
        return bool(targets) and all(not t["lastScrape"].startswith("0001-") for t in targets)

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["alerts"]

    def alert_names(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.alerts()}

    def shard_alerts(self) -> dict[str, tuple[str, str]]:
        """RelayProbeShardMissing alerts (pending or firing) as {target: (shard, state)}."""
        return {
            a["labels"]["target"]: (a["labels"]["shard"], a["state"])
            for a in self.alerts()
            if a["labels"]["alertname"] == "RelayProbeShardMissing"
        }

    def ready(self) -> bool:
        try:
            return http(f"{self.url}/-/ready", timeout=2)[0] == 200
        except (urllib.error.URLError, OSError):
            return False


@contextmanager
def running_prometheus(
    tmp: Path, targets: list[str], *, job: str, rules: Path
) -> Iterator[Prometheus]:
    """Prometheus (1 s scrape and rule evaluation, ``rules`` loaded) scraping ``targets`` as one
    static ``job``, answering /-/ready; output in ``tmp/prometheus.log`` (``Prometheus.log``),
    terminated on the way out."""
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{rules}']\n"
        f"scrape_configs:\n  - job_name: {job}\n"
        f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    cmd = [
        PROMETHEUS,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    prom = Prometheus(f"http://127.0.0.1:{port}", log)

    def up() -> bool:
        assert proc.poll() is None, f"Prometheus exited ({proc.returncode}): {log.read_text()}"
        return prom.ready()

    try:
        wait_for(f"Prometheus /-/ready at {prom.url} (log: {log})", up, 30)
        yield prom
    finally:
        proc.terminate()
        proc.wait(15)
