"""Per-sending-mailbox SMTP limits (Microsoft: 3 concurrent connections, 30 messages a minute)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator


class SendGate:
    """Microsoft's per-mailbox SMTP AUTH limits: concurrent connections and messages per minute.

    A probe holds the gate for its SMTP submission only (run_probe's ``send_slot``), so a slow
    delivery or a broken mailbox never keeps other probes of the same sender from sending.
    """

    def __init__(self, concurrent: int, per_minute: int) -> None:
        self._sem = asyncio.Semaphore(concurrent)
        self._per_minute = per_minute
        self._sent: deque[float] = deque()

    def _prune(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= 60.0:
            self._sent.popleft()

    def available(self) -> bool:
        """Whether the per-minute budget has room (a busy connection slot is only a short wait)."""
        self._prune(time.monotonic())
        return len(self._sent) < self._per_minute

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._sem:
            while True:
                now = time.monotonic()
                self._prune(now)
                if len(self._sent) < self._per_minute:
                    break
                await asyncio.sleep(60.0 - (now - self._sent[0]) + 0.01)
            self._sent.append(now)
            yield
