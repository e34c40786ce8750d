"""The `Testbed` handle the pytest fixture yields: addresses, ports, users and the `tb` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .tbkit import config

TB = Path(__file__).resolve().parent / "tb"


class TestbedError(RuntimeError):
    """A `tb` command failed; the message carries its output."""

    __test__ = False


def run_tb(state: Path, *args: str, owner: str = "", timeout: float = 120) -> str:
    cmd = [sys.executable, str(TB), *args]
    env = {**os.environ, "TB_STATE_DIR": str(state), "TB_SWITCH_OWNER": owner}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise TestbedError(f"`tb {' '.join(args)}` failed (exit {proc.returncode}): {output}")
    return output


def leases_dir(state: Path) -> Path:
    """One empty file per test session (named by pid) that uses the testbed."""
    return state.parent / f"{state.name}.leases"


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"  # zombies count as gone


def live_leases(state: Path) -> list[int]:
    """Pids of live sessions holding a lease; leases of dead sessions are removed."""
    leases = leases_dir(state)
    live = []
    for path in leases.iterdir() if leases.exists() else []:
        if path.name.isdigit():
            if pid_alive(int(path.name)):
                live.append(int(path.name))
            else:
                path.unlink(missing_ok=True)  # a crashed or killed session
    return live


@dataclass(frozen=True)
class Testbed:
    """Where the testbed listens and how to steer it (see tests/testbed/README.md)."""

    __test__ = False

    state_dir: Path
    ca_file: Path
    users: dict[str, str] = field(repr=False)  # address -> password (test accounts)
    host: str = config.HOST
    submission_port: int = config.PORTS["submission"]
    mx_port: int = config.PORTS["mx"]
    plain_port: int = config.PORTS["plain"]
    imap_tls_port: int = config.PORTS["imap_tls"]
    imap_starttls_port: int = config.PORTS["imap_starttls"]
    imap_strict_host: str = config.STRICT_HOST
    domain: str = config.DOMAIN
    # Switches set through this handle carry this owner; clear() removes only those.
    switch_owner: str = field(default="", repr=False)

    def switch(self, *args: str) -> str:
        """Run `tb switch ARGS` (takes effect for the next SMTP session); raises on failure."""
        return run_tb(self.state_dir, "switch", *args, owner=self.switch_owner)

    def clear(self) -> None:
        """Remove this session's switches (other sessions' switches stay)."""
        self.switch("clear")

    def stop_service(self, name: str) -> str:
        return run_tb(self.state_dir, "stop-service", name)

    def start_service(self, name: str) -> str:
        return run_tb(self.state_dir, "start-service", name)

    def log(self, name: str) -> str:
        """Content of log/NAME.log: postfix, dovecot, dnsmasq, syslog, opendkim, opendmarc, ..."""
        path = self.state_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def other_sessions(self) -> list[int]:
        """Pids of other live test sessions sharing this testbed (stop/start-service hurts them)."""
        return [pid for pid in live_leases(self.state_dir) if pid != os.getpid()]

    def env(self) -> dict[str, str]:
        lines = run_tb(self.state_dir, "env").splitlines()
        pairs = (line.split("=", 1) for line in lines if "=" in line)
        return {key: value.strip("'") for key, value in pairs}
