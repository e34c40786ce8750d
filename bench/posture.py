"""`relayprobe posture` wall time against a local dnsmasq and a silent DNS server (medians).

Run as root (dnsmasq binds port 53 on a loopback address; tests/posture/fixture.py):

    .venv/bin/python bench/posture.py --runs 5
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.posture.fixture import PostureDns, _session_ip, dkim_key  # noqa: E402

RELAYPROBE = [sys.executable, "-m", "relayprobe", "posture"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per case (default 5)")
    runs_per_case = parser.parse_args().runs
    dns = PostureDns(
        ip=_session_ip(4),
        port=53,
        dir=Path(tempfile.mkdtemp()),
        https_ip="127.0.0.1",
        key=dkim_key(),
        short_key=dkim_key(1024),
    )
    dns.start()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    quiet = f"127.0.0.1:{silent.getsockname()[1]}"
    cases = {
        "good.test via our dnsmasq": ["--dns-server", dns.server, "good.test"],
        "good.test, silent server, --timeout 2": [
            "--dns-server",
            quiet,
            "--timeout",
            "2",
            "good.test",
        ],
    }
    try:
        print("| case | median s | min s | max s |\n|---|---|---|---|")
        for name, args in cases.items():
            runs = []
            for _ in range(runs_per_case):
                t0 = time.monotonic()
                subprocess.run([*RELAYPROBE, *args], capture_output=True, check=False, cwd=ROOT)
                runs.append(time.monotonic() - t0)
            print(f"| {name} | {statistics.median(runs):.2f} | {min(runs):.2f} | {max(runs):.2f} |")
    finally:
        dns.stop()
        silent.close()


if __name__ == "__main__":
    main()
