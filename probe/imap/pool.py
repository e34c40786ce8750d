"""One bounded pool of threads that steps every folder watcher of the process, and per-mailbox
connection slots (docs/architecture.md, "Watching many mailboxes")."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

log = logging.getLogger("relayprobe.imap")

#: Worker threads that run watcher steps (blocking IMAP I/O: connect, NOOP, SEARCH, FETCH). A step
#: is short (one poll), so a few threads serve hundreds of mailboxes; override with the
#: environment variable below (docs/architecture.md, "Watching many mailboxes").
WORKERS = 16
WORKERS_ENV = "RELAYPROBE_IMAP_WORKERS"
#: Microsoft 365 allows 20 concurrent IMAP connections per mailbox (docs/m365.md, "Limits");
#: the watches of one process never hold more, whatever the number of targets on it.
MAX_CONNECTIONS_PER_MAILBOX = 20


class Steppable(Protocol):
    """What the pool drives: ``step`` does one bounded piece of blocking work and returns the
    seconds until it wants the next one (None: nothing to do until woken)."""

    def step(self) -> float | None: ...


class _Slot:
    """Scheduling state of one watcher in the pool (guarded by the pool's lock)."""

    __slots__ = ("done", "due", "running", "woken")

    def __init__(self) -> None:
        self.due: float | None = None  # when its next step is due; None: dormant
        self.running = False
        self.woken = False  # woken while its step ran: step again at once
        self.done = threading.Event()  # set while no step runs
        self.done.set()


class WatchPool:
    """Runs watcher steps on at most ``workers`` threads; one dispatcher thread keeps the clock.

    A watcher is never stepped twice at once; ``wake`` makes its next step due now (or right
    after the running one). Threads start lazily, at the first wake.
    """

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Steppable]] = []
        self._slots: dict[int, _Slot] = {}
        self._seq = itertools.count()
        self._executor: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None

    def _slot(self, watcher: Steppable) -> _Slot:
        return self._slots.setdefault(id(watcher), _Slot())

    def wake(self, watcher: Steppable) -> None:
        """Step ``watcher`` as soon as a worker is free (after its running step, if any)."""
        with self._lock:
            slot = self._slot(watcher)
            if slot.running:
                slot.woken = True
            else:
                self._schedule(watcher, slot, time.monotonic())
            self._ensure_threads()

    def forget(self, watcher: Steppable, timeout: float) -> bool:
        """Drop ``watcher``: no further steps; waits up to ``timeout`` for a running one to end.
        Returns False when that step was still running."""
        with self._lock:
            slot = self._slots.pop(id(watcher), None)
            if slot is None:
                return True
            slot.due, slot.woken = None, False
        return slot.done.wait(timeout)

    def busy(self) -> int:
        """Watchers with a step due or running (those holding a connection or about to)."""
        with self._lock:
            return sum(1 for s in self._slots.values() if s.running or s.due is not None)

    def _schedule(self, watcher: Steppable, slot: _Slot, due: float) -> None:
        if slot.due is not None and slot.due <= due:
            return  # already due sooner
        slot.due = due
        heapq.heappush(self._heap, (due, next(self._seq), watcher))
        self._changed.notify()

    def _ensure_threads(self) -> None:
        if self._dispatcher is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="imap-watch")
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="imap-dispatch", daemon=True
            )
            self._dispatcher.start()

    def _dispatch(self) -> None:
        assert self._executor is not None
        with self._lock:
            while True:
                if not self._heap:
                    self._changed.wait()
                    continue
                due, _, watcher = self._heap[0]
                now = time.monotonic()
                if due > now:
                    self._changed.wait(due - now)
                    continue
                heapq.heappop(self._heap)
                slot = self._slots.get(id(watcher))
                if slot is None or slot.running or slot.due != due:
                    continue  # forgotten, or superseded by an earlier or later schedule
                slot.due, slot.running = None, True
                slot.done.clear()
                self._executor.submit(self._run, watcher, slot)

    def _run(self, watcher: Steppable, slot: _Slot) -> None:
        delay: float | None = None
        try:
            delay = watcher.step()
        except Exception:  # a bug in a step must not kill the worker; the watcher goes dormant
            log.exception("imap watcher step crashed")
        with self._lock:
            slot.running = False
            slot.done.set()
            if self._slots.get(id(watcher)) is not slot:
                return  # forgotten while it ran
            if slot.woken:
                slot.woken = False
                self._schedule(watcher, slot, time.monotonic())
            elif delay is not None:
                self._schedule(watcher, slot, time.monotonic() + max(0.0, delay))


_pool: WatchPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> WatchPool:
    """The process's pool (workers from RELAYPROBE_IMAP_WORKERS, default WORKERS)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            raw = os.environ.get(WORKERS_ENV, "")
            workers = int(raw) if raw.isdigit() and int(raw) > 0 else WORKERS
            _pool = WatchPool(workers)
        return _pool


class ConnectionSlots:
    """At most ``limit`` open IMAP connections per mailbox (host, port, user) in this process."""

    def __init__(self, limit: int = MAX_CONNECTIONS_PER_MAILBOX) -> None:
        self.limit = limit
        self._open: dict[tuple[str, int, str], int] = {}
        self._cond = threading.Condition()

    def acquire(self, key: tuple[str, int, str], timeout: float) -> bool:
        """Take a slot for ``key``, waiting up to ``timeout`` seconds; False if none came free."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self._open.get(key, 0) < self.limit, timeout)
            if ok:
                self._open[key] = self._open.get(key, 0) + 1
            return ok

    def release(self, key: tuple[str, int, str]) -> None:
        with self._cond:
            left = self._open.get(key, 0) - 1
            if left > 0:
                self._open[key] = left
            else:
                self._open.pop(key, None)
            self._cond.notify_all()

    def held(self, key: tuple[str, int, str]) -> int:
        with self._cond:
            return self._open.get(key, 0)


#: The process's connection slots, shared by every watch (several targets on one mailbox, the
#: daemon's watch and a private one of a run whose shared watch is down).
connection_slots = ConnectionSlots()
