"""Cold start of the command lines (target: each --help and --version under 150 ms median).

.venv/bin/python bench/cli_startup.py --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
#: The commands whose start-up the issue bounds (docs/architecture.md, "Start-up"), plus `once`.
COMMANDS = (
    [str(BIN / "relayprobe"), "--version"],
    [str(BIN / "relayprobe"), "--help"],
    [sys.executable, "-m", "relayprobe", "--help"],
    [str(BIN / "check_m365_relay"), "--help"],
    [str(BIN / "relayprobe"), "once", "--help"],
)


def timed(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    return samples


def label(argv: list[str]) -> str:
    if argv[0] == sys.executable:
        return "python " + " ".join(argv[1:])
    return " ".join([Path(argv[0]).name, *argv[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "pass"]
    print(f"{'command':34} {'runs':>4} {'median':>9} {'p95':>9} {'vs python -c pass':>18}")
    base = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(baseline, check=False)
        base.append(time.perf_counter() - start)
    for argv in COMMANDS:
        samples = timed(argv, args.runs)
        med = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20, method="inclusive")[18]
        ratio = med / statistics.median(base)
        print(
            f"{label(argv):34} {len(samples):>4} {med * 1000:>7.1f}ms "
            f"{p95 * 1000:>7.1f}ms {ratio:>17.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
