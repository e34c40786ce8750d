"""The probes a mailbox watch waits for, its late mail, and which probes some watch of this process awaits."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from probe.tag import Tag

log = logging.getLogger("relayprobe.probe")

# Nonces that some watch of this process waits for, over IMAP or Graph. Watches of one process
# share the run id (each run_probe without a shared watch opens its own), so without this one
# watch would take another's probe as its own late mail: the cross-process bug of issue 11,
# within a process (docs/architecture.md, "Cleanup and nothing is lost").
_claims: set[str] = set()
_claims_lock = threading.Lock()


def claimed(nonce: str) -> bool:
    """Whether some watch of this process waits for the probe ``nonce``."""
    with _claims_lock:
        return nonce in _claims


class Arrived(Protocol):
    """A probe mail a watch saw (probe.imap.watcher.Found, probe.graph.watch.GraphFound)."""

    tag: Tag
    folder: str
    expected: bool
    other_run: bool


F = TypeVar("F", bound=Arrived)


class Arrivals(Generic[F]):
    """One watch's awaited probes (futures, resolved on the event loop) and its late mail."""

    def __init__(self, on_late: Callable[[F], None] | None) -> None:
        self._on_late = on_late
        self._waiting: dict[str, asyncio.Future[F]] = {}
        # Bounded: a long-running daemon counts late mail through on_late, not this list.
        self.late: collections.deque[F] = collections.deque(maxlen=1000)

    def wait(self, loop: asyncio.AbstractEventLoop, nonce: str) -> asyncio.Future[F]:
        """The future of ``nonce``'s arrival, claimed for this process until released."""
        future: asyncio.Future[F] = loop.create_future()
        self._waiting[nonce] = future
        with _claims_lock:
            _claims.add(nonce)
        return future

    def forget(self, nonce: str) -> None:
        """Stop waiting for ``nonce``: if it still arrives, it is late."""
        self._waiting.pop(nonce, None)
        self.release(nonce)

    def release(self, nonce: str) -> None:
        with _claims_lock:
            _claims.discard(nonce)

    def waiting(self) -> list[str]:
        return list(self._waiting)

    def hand_over(
        self, loop: asyncio.AbstractEventLoop | None, found: F, then: Callable[[F], None]
    ) -> None:
        """From a watch's thread: run ``then(found)`` on the event loop (dropped if it is gone)."""
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shut down while the watch was busy
            loop.call_soon_threadsafe(then, found)

    def deliver(self, found: F) -> bool:
        """On the event loop: resolve the waiting future (True), or count ``found`` as late.
        Another run's stale mail (already removed) is nobody's late mail."""
        if found.other_run:
            return False
        future = self._waiting.pop(found.tag.nonce, None)
        if future is not None and not future.done():
            future.set_result(found)
            return True
        found.expected = False
        self.late.append(found)
        log.info(
            "late or stale probe mail removed: target=%s probe_id=%s folder=%r",
            found.tag.target,
            found.tag.probe_id,
            found.folder,
        )
        if self._on_late is not None:
            self._on_late(found)
        return False
