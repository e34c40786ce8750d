"""The daemon's HTTP limits under a slowloris flood at a low descriptor limit; slow/huge requests."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from tests.system.daemon_helpers import (
    ROOT,
    TAG_SECRET,
    Daemon,
    free_port,
    http,
    ready,
    stop,
    value,
    wait_for,
)
from tests.system.probe_configs import target_dict

pytestmark = pytest.mark.testbed

NOFILE = 256  # the daemon's soft and hard RLIMIT_NOFILE: it cannot raise it
HEADER_TIMEOUT = 4.0
IDLE_TIMEOUT = 6.0
BODY_TIMEOUT = 2.0
FLAGS = (
    "--web.read-header-timeout",
    str(HEADER_TIMEOUT),
    "--web.read-body-timeout",
    str(BODY_TIMEOUT),
    "--web.idle-timeout",
    str(IDLE_TIMEOUT),
    "--smtp.max-messages-per-minute",
    "300",
)


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@contextmanager
def daemon_process(
    tb: Any, tmp: Path, doc: dict, *args: str, nofile: bool = True
) -> Iterator[Daemon]:
    """daemon_helpers.running_daemon, plus a descriptor limit set in the child before exec."""
    config = tmp / "relayprobe.yml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    port, log = free_port(), tmp / "daemon.log"
    env = {
        **os.environ,
        "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
        "TB_TAG_SECRET": TAG_SECRET,
    }
    cmd = [sys.executable, "-m", "exporters.daemon", "--config.file", str(config)]
    cmd += ["--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json", *args]
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=err,
            stderr=err,
            preexec_fn=_low_nofile if nofile else None,
        )
    scheme = "https" if "--web.config.file" in args else "http"
    d = Daemon(proc, f"{scheme}://127.0.0.1:{port}", config, log, tb, doc["instance"])
    try:
        if scheme == "http":
            wait_for("/-/ready", lambda: ready(d), 20)
        yield d
    finally:
        stop(d.proc)


def one_target(tb: Any, name: str, interval: str) -> dict:
    target = target_dict(tb, name, interval=interval, jitter=0, timeout="10s")
    target["thresholds"] = {"warning": "5s", "critical": "8s"}
    return {
        "instance": f"test-hard-{os.getpid()}-{name}-{int(time.time()) % 100000}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [target],
    }


@pytest.fixture(scope="module")
def daemon(testbed, tmp_path_factory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("hardening")
    with daemon_process(testbed, tmp, one_target(testbed, "good", "3s"), *FLAGS) as d:
        yield d


def port_of(d: Daemon) -> int:
    return int(d.url.rsplit(":", 1)[1])


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def healthy_seconds(d: Daemon, timeout: float = 2.0, path: str = "/-/healthy") -> float:
    """One fresh connection (no keep-alive), GET ``path``; its wall-clock seconds."""
    t0 = time.monotonic()
    status, body, _ = http(f"{d.url}{path}", timeout=timeout)
    assert status == 200 and (path != "/-/healthy" or body == "Healthy\n"), (status, body)
    return time.monotonic() - t0


def runs_and_failures(d: Daemon) -> tuple[float, float]:
    m = d.metrics()
    failures = sum(
        v
        for (name, labels), v in m.items()
        if name == "relayprobe_failures_total" and ("target", "good") in labels
    )
    return value(m, "relayprobe_runs_total", target="good") or 0, failures


@dataclass
class Slowloris:
    """``n`` sockets that send a request a header line every ``every`` s, never finishing it.

    A socket the server drops comes back after ``pause`` s, so the pressure stays on.
    """

    port: int
    n: int
    every: float = 2.0
    pause: float = 1.0
    opened: int = 0
    dropped: int = 0
    connect_errors: int = 0
    live: int = 0
    peak_live: int = 0
    lifetimes: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Slowloris:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(15)

    async def _run(self) -> None:
        await asyncio.gather(*(self._one(i) for i in range(self.n)))

    async def _one(self, i: int) -> None:
        await asyncio.sleep(i * 0.002)  # 400 connects over ~1 s
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 3
                )
            except (OSError, TimeoutError):
                self.connect_errors += 1
                await asyncio.sleep(self.pause)
                continue
            self.opened += 1
            self.live += 1
            self.peak_live = max(self.peak_live, self.live)
            t0 = time.monotonic()
            try:
                writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: relayprobe\r\n")
                while not self._stop.is_set():
                    try:
                        if not await asyncio.wait_for(reader.read(100), self.every):
                            break  # closed by the server
                    except TimeoutError:
                        writer.write(b"X-Slow: 1\r\n")
            except OSError:
                pass  # reset by the server
            finally:
                self.live -= 1
                writer.transport.abort()
            if not self._stop.is_set():
                self.dropped += 1
                self.lifetimes.append(time.monotonic() - t0)
                await asyncio.sleep(self.pause)


def test_slowloris_flood_leaves_health_and_probes_untouched(daemon):
    wait_for("a first successful probe", lambda: runs_and_failures(daemon)[0] >= 1, 30)
    runs0, failures0 = runs_and_failures(daemon)
    assert failures0 == 0, daemon.results()
    pid, latencies, scrapes, peak_fds = daemon.proc.pid, [], [], 0
    with Slowloris(port_of(daemon), n=400) as attack:
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            peak_fds = max(peak_fds, fds(pid))
            latencies.append(healthy_seconds(daemon, timeout=2.0))
            scrapes.append(healthy_seconds(daemon, timeout=2.0, path="/metrics"))
            time.sleep(0.2)
        opened, dropped, peak_live = attack.opened, attack.dropped, attack.peak_live
    runs1, failures1 = runs_and_failures(daemon)
    figures = (
        f"attack: {opened} connections opened ({attack.connect_errors} refused at connect), "
        f"{dropped} dropped by the server, peak {peak_live} open at once; "
        f"/-/healthy: {len(latencies)} checks, max {max(latencies) * 1000:.0f} ms, "
        f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms; "
        f"/metrics: max {max(scrapes) * 1000:.0f} ms; "
        f"daemon fds peak {peak_fds} of {NOFILE}; probes: {runs1 - runs0:.0f} runs, "
        f"{failures1 - failures0:.0f} failed"
    )
    print(figures)
    assert opened > NOFILE, figures  # more slow connections than the daemon has descriptors
    assert max(latencies) < 2.0, figures
    assert max(scrapes) < 2.0, figures
    assert runs1 - runs0 >= 5, figures
    assert failures1 == failures0, f"{figures}: {daemon.results()}"
    assert daemon.results()["good"]["success"] is True
    log = daemon.log.read_text()
    assert "Too many open files" not in log
    assert "HTTP clients are being cut off" in log
    limits = next(e for e in daemon.logs() if e["msg"] == "HTTP limits")
    assert limits["descriptors"] == NOFILE and limits["max_connections"] < NOFILE


async def _closed_after(port: int, send: list[bytes], every: float, limit: float) -> float:
    """Connect, send ``send`` one item every ``every`` s (then nothing); seconds until closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        for chunk in send:
            writer.write(chunk)
            try:
                if not await asyncio.wait_for(reader.read(100), every):
                    return time.monotonic() - t0
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - t0
        try:
            while await asyncio.wait_for(reader.read(4096), limit):
                pass
        except OSError:
            pass
        return time.monotonic() - t0
    finally:
        writer.transport.abort()


def test_slow_silent_and_idle_clients_are_disconnected(daemon):
    port = port_of(daemon)
    slow = [b"GET /-/healthy HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 20  # a line a second
    kept = [b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"]  # answered, then idle
    body = [b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"] + [b"x"] * 40

    async def all_four() -> list[float]:
        return await asyncio.gather(
            _closed_after(port, slow, 1.0, 20),
            _closed_after(port, [], 1.0, 20),
            _closed_after(port, kept, 0.5, 20),
            _closed_after(port, body, 0.5, 20),  # a byte of body every 0.5 s
        )

    t_slow, t_silent, t_idle, t_body = asyncio.run(all_four())
    print(
        f"closed after: slow headers {t_slow:.1f} s, silent {t_silent:.1f} s, "
        f"idle {t_idle:.1f} s, slow body {t_body:.1f} s"
    )
    assert HEADER_TIMEOUT - 0.5 < t_slow < HEADER_TIMEOUT + 1.5
    assert HEADER_TIMEOUT - 0.5 < t_silent < HEADER_TIMEOUT + 1.5
    assert IDLE_TIMEOUT - 0.5 < t_idle < IDLE_TIMEOUT + 1.5
    assert BODY_TIMEOUT - 0.5 < t_body < BODY_TIMEOUT + 1.5
    healthy_seconds(daemon)


def _status(port: int, request: bytes) -> int:
    """Send ``request`` on a new connection; the status of the reply (the server may linger)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n" not in reply and (chunk := s.recv(4096)):
            reply += chunk
        assert reply.startswith(b"HTTP/1."), reply[:200]
        return int(reply.split()[1])


def test_oversized_requests_are_refused_without_hurting_other_clients(daemon):
    port = port_of(daemon)
    other = HTTPConnection("127.0.0.1", port, timeout=5)  # a kept-alive client
    other.request("GET", "/-/healthy")
    assert other.getresponse().read() == b"Healthy\n"
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    long_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"
    big_body = b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
    for request, status in ((long_line, 400), (long_header, 400), (many, 400), (big_body, 413)):
        assert _status(port, request) == status, request[:40]
    other.request("GET", "/-/healthy")  # the same connection still works
    assert other.getresponse().read() == b"Healthy\n"
    other.close()
    status, body, _ = http(f"{daemon.url}/metrics")
    assert status == 200 and "relayprobe_runs_total" in body
    log = daemon.log.read_text()
    assert "bbbbbbbbbb" not in log and "aaaaaaaaaa" not in log  # counted, not logged


def test_tls_connections_that_never_finish_the_handshake_are_closed(testbed, tmp_path):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    doc = one_target(testbed, "tls", "1h")
    args = ("--web.config.file", str(tmp_path / "web.yml"), *FLAGS)
    with daemon_process(testbed, tmp_path, doc, *args, nofile=False) as d:
        port = port_of(d)

        def https_healthy() -> bool:
            assert d.proc.poll() is None, d.log.read_text()
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
                ):
                    s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    return s.recv(4096).startswith(b"HTTP/1.1 200")
            except OSError:
                return False

        wait_for("HTTPS /-/healthy", https_healthy, 20)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # the start of a ClientHello

        async def both() -> list[float]:
            return await asyncio.gather(
                _closed_after(port, [], 1.0, 20), _closed_after(port, [hello], 1.0, 20)
            )

        t_silent, t_partial = asyncio.run(both())
        print(
            f"TLS closed after: no handshake {t_silent:.1f} s, half a ClientHello {t_partial:.1f} s"
        )
        assert HEADER_TIMEOUT - 0.5 < t_silent < HEADER_TIMEOUT + 1.5
        assert HEADER_TIMEOUT - 0.5 < t_partial < HEADER_TIMEOUT + 1.5
        assert https_healthy()
