"""The shared watcher pool: steps on a bounded set of threads, never two at once per watcher."""

from __future__ import annotations

import threading
import time

import pytest

from probe.imap.pool import ConnectionSlots, WatchPool


class Counter:
    """A watcher stand-in: counts steps, notes overlap, asks again ``repeat`` times."""

    def __init__(self, repeat: int = 0, hold: float = 0.0) -> None:
        self.steps = 0
        self.repeat = repeat
        self.hold = hold
        self.running = 0
        self.overlapped = False
        self.threads: set[str] = set()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def step(self) -> float | None:
        with self._lock:
            self.running += 1
            self.overlapped |= self.running > 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.hold)
        with self._lock:
            self.running -= 1
            self.steps += 1
            more = self.steps <= self.repeat
        if not more:
            self.done.set()
        return 0.0 if more else None


def test_a_woken_watcher_is_stepped_until_it_goes_dormant() -> None:
    pool = WatchPool(workers=2)
    w = Counter(repeat=4)
    pool.wake(w)
    assert w.done.wait(10)
    time.sleep(0.05)
    assert w.steps == 5  # the first step and the four it asked for; then dormant
    assert pool.busy() == 0


def test_wakes_during_a_step_never_run_it_twice_at_once() -> None:
    pool = WatchPool(workers=4)
    w = Counter(hold=0.02)
    for _ in range(20):
        pool.wake(w)
        time.sleep(0.005)
    deadline = time.monotonic() + 10
    while pool.busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not w.overlapped and w.steps >= 2


def test_hundreds_of_watchers_share_the_bounded_threads() -> None:
    pool = WatchPool(workers=3)
    watchers = [Counter(repeat=1) for _ in range(300)]
    for w in watchers:
        pool.wake(w)
    assert all(w.done.wait(10) for w in watchers)
    names = set().union(*(w.threads for w in watchers))
    assert 1 <= len(names) <= 3 and all(n.startswith("imap-watch") for n in names)


def test_a_forgotten_watcher_is_not_stepped_again() -> None:
    pool = WatchPool(workers=1)
    w = Counter(repeat=10**6, hold=0.001)
    pool.wake(w)
    time.sleep(0.05)
    assert pool.forget(w, timeout=5)
    steps = w.steps
    time.sleep(0.05)
    assert w.steps == steps and pool.busy() == 0


def test_connection_slots_cap_each_mailbox_and_free_on_release() -> None:
    slots = ConnectionSlots(limit=2)
    a, b = ("imap.example", 993, "a@x"), ("imap.example", 993, "b@x")
    assert slots.acquire(a, 0) and slots.acquire(a, 0)
    assert not slots.acquire(a, 0.01)  # the third connection to one mailbox waits, then gives up
    assert slots.acquire(b, 0)  # another mailbox has its own slots
    slots.release(a)
    assert slots.acquire(a, 0) and slots.held(a) == 2


def test_the_process_pool_takes_its_size_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from probe.imap import pool

    monkeypatch.setattr(pool, "_pool", None)
    monkeypatch.setenv(pool.WORKERS_ENV, "4")
    assert pool.default_pool().workers == 4 and pool.default_pool() is pool.default_pool()
    monkeypatch.setattr(pool, "_pool", None)
    monkeypatch.setenv(pool.WORKERS_ENV, "lots")  # not a number: the default
    assert pool.default_pool().workers == pool.WORKERS
    monkeypatch.setattr(pool, "_pool", None)  # the next caller builds the real one afresh


class NoPool:
    """A pool that never steps (the linger arithmetic needs no IMAP server)."""

    def wake(self, watcher: object) -> None:
        pass

    def forget(self, watcher: object, timeout: float) -> bool:
        return True


def test_a_watcher_keeps_its_connection_only_when_probes_come_often() -> None:
    from types import SimpleNamespace

    from probe.imap.watcher import FolderWatcher, WatchSettings

    cfg = SimpleNamespace(host="imap.example", port=993, auth=SimpleNamespace(username="u@x"))
    settings = WatchSettings(linger=120.0, short_linger=10.0)
    w = FolderWatcher(
        cfg,  # type: ignore[arg-type]
        "INBOX",
        secret=b"s",
        instance="i",
        on_found=lambda found: None,
        settings=settings,
        pool=NoPool(),  # type: ignore[arg-type]
    )
    assert w._linger() == 10.0  # no cadence known yet: log out soon after the probe
    w.expect("a", 0.0)
    w._last_expect = (w._last_expect or 0.0) - 60  # the previous probe came a minute ago
    w.expect("b", 0.0)
    assert 69 < w._linger() < 71  # kept until just after the next one is due
    w._last_expect = (w._last_expect or 0.0) - 300  # a probe every 5 minutes
    w.expect("c", 0.0)
    assert w._linger() == 10.0  # a login per probe is cheaper than 5 idle minutes
