"""The command line as a person meets it: a progress line on a terminal, JSON from doctor."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.system.daemon_helpers import TAG_SECRET
from tests.system.probe_configs import target_dict

pytestmark = pytest.mark.testbed
ROOT = Path(__file__).resolve().parents[2]


def write_config(tb: Any, tmp_path: Path, **over: Any) -> tuple[Path, dict[str, str]]:
    doc = {
        "instance": f"cli-{secrets.token_hex(4)}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [target_dict(tb, **over)],
    }
    path = tmp_path / "relayprobe.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {
        **os.environ,
        "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
        "TB_TAG_SECRET": TAG_SECRET,
    }
    return path, env


def on_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; everything it drew, and its code."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), seen


def test_once_draws_a_progress_line_on_a_terminal_and_erases_it(testbed: Any, tmp_path: Path):
    path, env = write_config(testbed, tmp_path, rcpt_to="inbox+delay3@probe.test")
    argv = [sys.executable, "-m", "relayprobe", "once", "--config", str(path)]
    code, drawn = on_terminal(argv, env)
    assert code == 0, drawn.decode(errors="replace")
    text = drawn.decode()
    assert "relay: waiting for delivery" in text and "(deadline 20 s)" in text
    assert text.count("\r\x1b[K") >= 3  # redrawn in place while waiting, erased at the end
    assert "relay: OK (done, ok)" in text


def test_no_progress_line_when_piped_or_quiet(testbed: Any, tmp_path: Path):
    path, env = write_config(testbed, tmp_path, rcpt_to="inbox+delay2@probe.test")
    argv = [sys.executable, "-m", "relayprobe", "once", "--config", str(path)]
    piped = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "waiting for delivery" not in piped.stderr and "\x1b[K" not in piped.stderr
    code, drawn = on_terminal([*argv, "--quiet"], env)
    assert code == 0 and b"waiting for delivery" not in drawn and b"OK (done, ok)" in drawn


def test_doctor_json_lists_every_step_with_its_state(testbed: Any, tmp_path: Path):
    path, env = write_config(testbed, tmp_path)
    argv = [sys.executable, "-m", "relayprobe", "doctor", "--config", str(path), "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    (target,) = doc["targets"]
    steps = {s["step"]: s["state"] for s in target["steps"]}
    assert target["target"] == "relay" and doc["failed"] == 0
    assert {"dns", "tcp", "tls", "smtp-auth", "folders"} <= set(steps)
    assert set(steps.values()) <= {"ok", "warn", "skip"}


def test_doctor_json_names_the_failed_step_and_its_fix(testbed: Any, tmp_path: Path):
    path, env = write_config(testbed, tmp_path, smtp={"port": testbed.submission_port + 9})
    argv = [sys.executable, "-m", "relayprobe", "doctor", "--config", str(path), "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    failed = [s for t in doc["targets"] for s in t["steps"] if s["state"] == "fail"]
    assert failed and failed[0]["step"] == "tcp" and failed[0]["fix"]
