"""pytest plugin: the session-wide `testbed` fixture (real Postfix + Dovecot on loopback) and helpers."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .api import Testbed, TestbedError, leases_dir, live_leases, run_tb
from .tbkit import config

__all__ = ["Testbed", "TestbedError", "tb_clean", "testbed"]
_SUMMARY: list[str] = []


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """Start the mail system unless it runs; stop it at the end only if this session started it."""
    state = config.state_dir()
    if os.geteuid() != 0 or shutil.which("postfix") is None:
        pytest.fail(
            "the mail testbed needs root and its packages: run "
            "`bash tests/testbed/install.sh` as root (see tests/testbed/README.md)"
        )
    me = os.getpid()
    leases = leases_dir(state)
    leases.mkdir(parents=True, exist_ok=True)
    (leases / str(me)).write_text("")
    t0 = time.monotonic()
    try:
        output = run_tb(state, "start", "--owner", str(me))
    except BaseException:
        (leases / str(me)).unlink(missing_ok=True)
        raise
    owner = state / "owner"
    started = "already up" not in output and owner.exists() and owner.read_text().strip() == str(me)
    how = "started by this session" if started else "already running, shared"
    line = f"testbed: mail system up in {time.monotonic() - t0:.1f} s ({how}; {state})"
    _SUMMARY.append(line)
    print(line)
    yield Testbed(
        state_dir=state,
        ca_file=state / "tls" / "ca.crt",
        users=dict(config.USERS),
        switch_owner=str(me),
    )
    _release(state, me, started)


def _release(state: Path, me: int, started: bool) -> None:
    """Stop only our own testbed; if others still use it, the last one out stops it for us."""
    leases = leases_dir(state)
    with open(leases / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (leases / str(me)).unlink(missing_ok=True)
        others = live_leases(state)
        handoff = state / "stop-when-idle"
        if started and others:
            handoff.write_text(f"started by {me}, still used by {others}\n")
        elif (started or handoff.exists()) and not others:
            try:
                _SUMMARY.append(run_tb(state, "stop"))
            except TestbedError as exc:  # a session joined meanwhile: it stops it when done
                handoff.write_text(f"started by {me}; stop refused: {exc}\n")
                _SUMMARY.append(f"testbed: left running for another session ({exc})")


@pytest.fixture
def tb_clean(testbed: Testbed) -> Iterator[Testbed]:
    """The testbed; this session's fault switches are cleared after the test (nothing leaks)."""
    yield testbed
    testbed.clear()


EXCLUSIVE = "testbed_exclusive"


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, next to the hook that honours it (pyproject's --strict-markers).
    config.addinivalue_line(
        "markers",
        f"{EXCLUSIVE}: stops or breaks a shared testbed daemon (e.g. stop_service('dovecot')); "
        "skipped while other test sessions hold a lease (tests/testbed/README.md#service-outages)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "testbed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.testbed)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(EXCLUSIVE) is None:
        return
    # Every session sharing the testbed would see the outage: run only when alone.
    others = [pid for pid in live_leases(config.state_dir()) if pid != os.getpid()]
    if others:
        pytest.skip(f"test sessions {others} share the testbed; {EXCLUSIVE} runs when alone")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(line)
