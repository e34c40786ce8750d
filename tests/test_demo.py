"""`relayprobe demo`: the README's first command, against the embedded mail system."""

import subprocess
import sys
from pathlib import Path

from probe.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_rounds_and_shows_a_pass_and_a_caught_failure(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "probe.cli",
            "demo",
            "--count",
            "2",
            "--interval",
            "0.2",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("demo-submission: OK (done, ok)") == 2
    assert out.count("demo-direct-send: CRITICAL (done, auth_result_mismatch)") == 2
    assert "verdict   spf=pass dkim=pass dmarc=pass" in out
    assert "verdict   spf=fail dkim=none dmarc=fail" in out
    assert "placement junk (Junk Email)" in out
    # The config it wrote is one a user could take away: valid, secrets in 0600 files.
    config = load_config(tmp_path / "relayprobe-demo.yml")
    assert [t.name for t in config.targets] == ["demo-submission", "demo-direct-send"]
    assert (tmp_path / "secrets" / "tag_secret").stat().st_mode & 0o777 == 0o600
    assert config.tag_secret.get() not in out + proc.stderr
