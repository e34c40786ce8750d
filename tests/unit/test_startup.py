"""--help and --version stay fast: they load none of the heavy libraries (timings: bench/cli_startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
#: Libraries that cost tens of milliseconds each and that no help text needs.
HEAVY = {
    "aiohttp",
    "aiosmtplib",
    "apscheduler",
    "imapclient",
    "msal",
    "nagiosplugin",
    "prometheus_client",
    "pydantic",
    "requests",
    "yaml",
}


def imported(argv: list[str]) -> set[str]:
    """Top-level packages the command imported, read from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode in (0, 3), proc.stderr[-2000:]  # --help: 0 (relayprobe), 3 (plugin)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert names, "no importtime output"
    return names


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "relayprobe"), "--version"],
        [str(BIN / "relayprobe"), "--help"],
        ["-m", "relayprobe", "--help"],
        [str(BIN / "check_m365_relay"), "--help"],
    ],
    ids=["relayprobe --version", "relayprobe --help", "python -m relayprobe", "check --help"],
)
def test_help_and_version_load_no_heavy_library(argv: list[str]) -> None:
    assert imported(argv) & HEAVY == set()


def test_the_check_sees_a_heavy_import() -> None:
    assert "yaml" in imported(["-c", "import yaml"])
