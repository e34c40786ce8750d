"""`relayprobe demo`: the README's first command, against the embedded mail system."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from probe.config import load_config
from tests.system.daemon_helpers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def test_demo_probes_on_a_schedule_serves_metrics_and_shows_a_caught_failure(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relayprobe",
            "demo",
            "--count",
            "3",
            "--interval",
            "1",
            "--state-dir",
            str(tmp_path),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        # While it runs, the daemon's own /metrics says the good target succeeds.
        deadline, metrics = time.monotonic() + 30, ""
        while time.monotonic() < deadline:
            metrics = _metrics(f"http://127.0.0.1:{port}/metrics")
            if 'relayprobe_success{target="demo-submission"} 1' in metrics:
                break
            time.sleep(0.2)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert 'relayprobe_success{target="demo-submission"} 1' in metrics
    assert 'relayprobe_success{target="demo-direct-send"} 0' in metrics
    assert proc.returncode == 0, err
    assert out.count("demo-submission: OK (done, ok)") >= 3
    assert out.count("demo-direct-send: CRITICAL (done, auth_result_mismatch)") >= 3
    assert "verdict   spf=pass dkim=pass dmarc=pass" in out
    assert "verdict   spf=fail dkim=none dmarc=fail" in out
    assert "placement junk (Junk Email)" in out
    # The config it wrote is one a user could take away: valid, secrets in 0600 files.
    config = load_config(tmp_path / "relayprobe-demo.yml")
    assert [t.name for t in config.targets] == ["demo-submission", "demo-direct-send"]
    assert (tmp_path / "secrets" / "tag_secret").stat().st_mode & 0o777 == 0o600
    assert config.tag_secret.get() not in out + err
