"""The documented benchmark commands run as written (with fewer runs) and print their tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed.api import Testbed

ROOT = Path(__file__).resolve().parents[2]
#: A table row: a label, the run count, then durations ("0.167s", "15.0ms").
_ROW = re.compile(r"^\S.*\s(\d+)\s+\d+\.\d+m?s\s+\d+\.\d+m?s\s+\d+\.\d+m?s\s+\d+\.\d+m?s")


def _documented(command: str) -> list[str]:
    """``command`` as docs/testing.md prints it (one line there), split into arguments."""
    text = " ".join((ROOT / "docs/testing.md").read_text().split())
    assert command in text, f"docs/testing.md no longer shows {command!r}"
    return command.split()


@pytest.mark.parametrize(
    "command",
    [
        ".venv/bin/python bench/detection.py --runs 30",
        ".venv/bin/python bench/detection.py --protocol graph --runs 30",
    ],
)
def test_detection_bench_prints_its_table(testbed: Testbed, command: str) -> None:
    args = _documented(command)
    args[args.index("--runs") + 1] = "3"  # the command as documented, fewer probes
    done = subprocess.run(
        [sys.executable, *args[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TB_STATE_DIR": str(testbed.state_dir), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [m for line in done.stdout.splitlines() if (m := _ROW.match(line))]
    assert len(rows) >= 2, done.stdout  # one row per mode, each with its 3 runs
    assert all(m.group(1) == "3" for m in rows), done.stdout


def test_posture_bench_prints_its_table() -> None:
    args = _documented(".venv/bin/python bench/posture.py --runs 5")
    args[args.index("--runs") + 1] = "1"
    done = subprocess.run(
        [sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\| good\.test.* \| \d", line)]
    assert len(rows) == 2, done.stdout  # via dnsmasq, and against the silent server
