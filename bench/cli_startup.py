"""Cold start of the relayprobe command line (target: --help and --version under 150 ms).

.venv/bin/python bench/cli_startup.py --runs 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent / "relayprobe"


def timed(argv: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(BIN), *argv], capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    baseline = [sys.executable, "-c", "pass"]
    print(f"{'command':32} {'runs':>4} {'median':>9} {'p95':>9} {'vs python -c pass':>18}")
    base = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run(baseline, check=False)
        base.append(time.perf_counter() - start)
    for argv in (["--version"], ["--help"], ["once", "--help"]):
        samples = timed(argv, args.runs)
        med = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20, method="inclusive")[18]
        ratio = med / statistics.median(base)
        print(
            f"{'relayprobe ' + ' '.join(argv):32} {len(samples):>4} {med * 1000:>7.1f}ms "
            f"{p95 * 1000:>7.1f}ms {ratio:>17.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
