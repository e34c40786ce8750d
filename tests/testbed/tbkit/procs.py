"""Starting (inside a private mount namespace), watching and stopping the testbed daemons by pid."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import config

P = config.PORTS
H, S3 = config.HOST, config.STRICT_HOST
# name -> (command, pid file, TCP ports that must accept connections); start order.
DAEMONS: dict[str, tuple[list[str], str, list[tuple[str, int]]]] = {
    "dnsmasq": (["dnsmasq", "-C", "{S}/dns/dnsmasq.conf"], "run/dnsmasq.pid", []),
    "opendkim-sign": (
        ["opendkim", "-x", "{S}/milters/opendkim-sign.conf"],
        "run/opendkim-sign.pid",
        [(H, P["dkim_sign"])],
    ),
    "opendkim-verify": (
        ["opendkim", "-x", "{S}/milters/opendkim-verify.conf"],
        "run/opendkim-verify.pid",
        [(H, P["dkim_verify"])],
    ),
    "opendmarc": (
        ["opendmarc", "-c", "{S}/milters/opendmarc.conf"],
        "run/opendmarc/opendmarc.pid",
        [(H, P["dmarc"])],
    ),
    "dovecot": (
        ["dovecot", "-c", "{S}/dovecot/dovecot.conf"],
        "run/dovecot/master.pid",
        [
            (H, P["imap_starttls"]),
            (H, P["imap_tls"]),
            (S3, P["imap_starttls"]),
            (S3, P["imap_tls"]),
            (H, P["lmtp"]),
        ],
    ),
    "postfix": (
        ["postfix", "-c", "{S}/postfix", "start"],
        "spool/pid/master.pid",
        [(H, P["submission"]), (H, P["mx"]), (H, P["plain"])],
    ),
}
DEV_LOG = Path("/dev/log")


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) from /proc/PID/stat, or None when gone.

    Zombies are read here, not by ``kill -0`` (tests/testbed/README.md#zombies-and-slow-milters).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def alive(pid: int, start: int | None = None) -> bool:
    st = proc_state(pid)
    return st is not None and st[0] not in "ZX" and (start is None or st[1] == start)


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(pid: int, kids: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _pids_file(state: Path) -> Path:
    return state / "run" / "pids.json"


def load_pids(state: Path) -> dict[str, list[int]]:
    try:
        return json.loads(_pids_file(state).read_text())
    except (OSError, ValueError):
        return {}


def save_pids(state: Path, pids: dict[str, list[int]]) -> None:
    _pids_file(state).write_text(json.dumps(pids, sort_keys=True) + "\n")


def daemon_pid(state: Path, name: str) -> int | None:
    """Pid of a running daemon: the recorded pid (with its start time) or its pid file."""
    rec = load_pids(state).get(name)
    if rec and alive(rec[0], rec[1]):
        return rec[0]
    if name in DAEMONS:
        try:
            pid = int((state / DAEMONS[name][1]).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None
    return None


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def dns_bound() -> bool:
    # 127.0.0.153:53 in /proc/net/udp is "9900007F:0035".
    return "9900007F:0035" in Path("/proc/net/udp").read_text()


def wait_ready(names: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    for name in names:
        checks = [lambda h=h, p=p: port_open(h, p) for h, p in DAEMONS[name][2]]
        if name == "dnsmasq":
            checks.append(dns_bound)
        for check in checks:
            while not check():
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not come up within {timeout:.0f} s; "
                        "see the logs in the state dir (log/start.log, log/*.log)"
                    )
                time.sleep(0.05)


def start_syslog(state: Path) -> None:
    """Catch syslog(3) of the milters on /dev/log, only if nobody else serves it.

    See tests/testbed/README.md#syslog-catcher.
    """
    if DEV_LOG.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(str(DEV_LOG))
            pids = load_pids(state)
            pids["syslog-external"] = [1]
            save_pids(state, pids)
            return  # someone (a real syslogd) listens: the milters log there
        except OSError:
            DEV_LOG.unlink()  # stale socket of a dead catcher
        finally:
            probe.close()
    with open(state / "log/start.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(state / "bin/syslogd.py"), str(DEV_LOG), str(state / "log")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    for _ in range(100):
        if DEV_LOG.exists():
            break
        time.sleep(0.01)
    pids = load_pids(state)
    st = proc_state(proc.pid)
    pids["syslog"] = [proc.pid, st[1] if st else 0, os.stat(DEV_LOG).st_ino]
    save_pids(state, pids)


def ns_start(state: Path, names: list[str]) -> None:
    """Run inside `unshare --mount`: point resolv.conf at dnsmasq, then start the daemons."""
    subprocess.run(
        ["mount", "--bind", str(state / "dns/resolv.conf"), "/etc/resolv.conf"], check=True
    )
    with open(state / "log/start.log", "ab") as log:
        for name in names:
            cmd = [a.replace("{S}", str(state)) for a in DAEMONS[name][0]]
            # Daemons must not inherit our stdout: a pipe would never close
            # (tests/testbed/README.md#daemon-stdio).
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{name} failed to start (exit {proc.returncode}); see {state}/log/start.log"
                )


def start(state: Path, names: list[str]) -> None:
    """Start daemons in a fresh private mount namespace and wait until they serve."""
    tb = Path(__file__).resolve().parent.parent / "tb"
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            str(tb),
            "_ns-start",
            *names,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "TB_STATE_DIR": str(state)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"starting {', '.join(names)} failed: {proc.stderr.strip()[-2000:]}")
    wait_ready(names)
    pids = load_pids(state)
    for name in names:
        pid = daemon_pid(state, name)
        st = proc_state(pid) if pid else None
        if pid is None or st is None:
            raise RuntimeError(f"{name} started but wrote no live pid to {DAEMONS[name][1]}")
        pids[name] = [pid, st[1]]
    save_pids(state, pids)


def stop(state: Path, names: list[str], grace: float = 1.0) -> list[str]:
    """Stop daemons (and all their children) by pid: SIGTERM, grace, SIGKILL.

    See tests/testbed/README.md#zombies-and-slow-milters.
    """
    kids = children_map()
    victims: list[int] = []
    stopped = []
    pids = load_pids(state)
    for name in names:
        pid = daemon_pid(state, name)
        if pid is not None and pid > 1:  # never signal 1 or -1 (everything)
            victims.extend(tree(pid, kids))
            stopped.append(name)
        pids.pop(name, None)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        for pid in victims:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
    left = [p for p in victims if alive(p)]
    if left:
        raise RuntimeError(f"processes {left} survived SIGKILL")
    if "syslog" in names and "syslog" in load_pids(state):
        inode = load_pids(state)["syslog"][2]
        if DEV_LOG.exists() and os.stat(DEV_LOG).st_ino == inode:
            DEV_LOG.unlink()  # only our own socket
    save_pids(state, pids)
    return stopped


def all_names() -> list[str]:
    return ["syslog", *DAEMONS]
