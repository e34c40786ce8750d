"""Cold-start time of check_m365_relay: --help and a passive-mode check, median and p95 over N runs."""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# After the path set-up, so the checkout is benchmarked:
from probe.result import rfc3339  # noqa: E402
from tests.results import m365_delivered  # noqa: E402

BUDGET_MS = {"--help": 150.0, "passive check": 250.0}  # issue #5


def document() -> bytes:
    now = dt.datetime.now(dt.UTC)
    result = m365_delivered(started_at=now - dt.timedelta(seconds=13))
    item = {**result.to_dict(), "finished_at": rfc3339(now)}
    return json.dumps({"results": [item]}).encode()


def serve() -> str:
    """A stand-in for relayprobe's /api/results on loopback (the exporter daemon is not used)."""
    body = document()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def measure(argv: list[str], runs: int, expect_code: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True)
        times.append((time.perf_counter() - t0) * 1000)
        if proc.returncode != expect_code:
            sys.exit(f"{argv} exited {proc.returncode}, expected {expect_code}: {proc.stdout!r}")
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs per case (at least 20)")
    parser.add_argument("--plugin", default=str(Path(sys.executable).parent / "check_m365_relay"))
    args = parser.parse_args()
    runs = max(args.runs, 20)
    url = serve()
    cases = {
        "--help": ([args.plugin, "--help"], 3),
        "passive check": (
            [args.plugin, "--from-exporter", url, "--target", "m365-submission", "-w", "60"],
            0,
        ),
    }
    measure([args.plugin, "--help"], 3, 3)  # warm the page cache, as on a running monitoring host
    print(f"check_m365_relay cold start, {runs} runs each ({args.plugin})")
    print(f"{'case':<15} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'budget ms':>10}  verdict")
    failed = False
    for name, (argv, code) in cases.items():
        t = measure(argv, runs, code)
        med, p, worst = statistics.median(t), p95(t), max(t)
        ok = p <= BUDGET_MS[name]
        failed |= not ok
        verdict = "ok" if ok else "OVER"
        print(
            f"{name:<15} {med:>10.1f} {p:>8.1f} {worst:>8.1f} {BUDGET_MS[name]:>10.0f}  {verdict}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
