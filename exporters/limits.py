"""Limits: per-mailbox SMTP sending, the HTTP server's connections and deadlines, descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("relayprobe.daemon")


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


# -- Descriptors -------------------------------------------------------------------------------

#: Descriptors the HTTP side never gets, so probes can open theirs while it is under attack: the
#: base covers the process itself (log, epoll, thread pools, DNS look-ups, the listener), the
#: per-target part one round trip (SMTP socket, IMAP watch connections, a per-run IMAP login, the
#: CA file).
RESERVE_BASE = 64
RESERVE_PER_TARGET = 8
#: The listen backlog; asyncio also accepts up to this many sockets in one go before the
#: connection cap sees them, so it is counted in the HTTP side's share of descriptors.
MAX_BACKLOG = 128
#: Below this many HTTP connections the descriptor limit is called too low (a warning at start).
MIN_CONNECTIONS = 8
_UNLIMITED = 1 << 20  # Linux's default fs.nr_open: the most a soft limit can be raised to


@dataclass(frozen=True)
class Descriptors:
    """RLIMIT_NOFILE as the daemon left it (``soft``, ``hard``) and as it found it (``before``)."""

    soft: int
    hard: int
    before: int


def raise_nofile_limit() -> Descriptors:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed (as Go's runtime does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    want = _UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, want, exc)
    return Descriptors(soft, hard, before)


@dataclass(frozen=True)
class ConnectionBudget:
    """How many HTTP connections the descriptor limit allows next to the probes' reserve."""

    cap: int
    backlog: int
    reserve: int


def connection_budget(soft: int, targets: int, configured: int) -> ConnectionBudget:
    """cap = min(``--web.max-connections``, soft limit − reserve − backlog), at least 1."""
    reserve = RESERVE_BASE + RESERVE_PER_TARGET * targets
    free = (_UNLIMITED if soft == resource.RLIM_INFINITY else soft) - reserve
    backlog = max(MIN_CONNECTIONS, min(MAX_BACKLOG, free // 2))
    return ConnectionBudget(max(1, min(configured, free - backlog)), backlog, reserve)


# -- The HTTP server's connections -------------------------------------------------------------


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP server's limits: the daemon's ``--web.*`` flags (docs/exporter.md, "HTTP limits")."""

    max_connections: int = 256
    read_header_timeout: float = 10.0
    read_body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    max_body_size: int = 64 * 1024

    def handler_args(self) -> dict[str, Any]:
        """The limits aiohttp enforces itself (``web.AppRunner`` keyword arguments)."""
        return {
            "keepalive_timeout": self.idle_timeout,
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


_REPORT_EVERY = 60.0  # seconds between warnings while connections are being dropped


class Listener:
    """The protocol factory for ``loop.create_server``: a connection cap and read deadlines.

    aiohttp 3 has an idle (keep-alive) timeout and size limits of its own, but no header or body
    read timeout, no connection cap, and with ``create_server(ssl=…)`` it sees a connection only
    after the TLS handshake. So each accepted socket first gets a ``Guard``: it is counted from
    the moment it is accepted, does the TLS handshake itself (``loop.start_tls``), and only then
    hands the connection to aiohttp's handler (``handler_factory``), forwarding every event.

    At the cap a new connection evicts the oldest one that is not in a request (still sending
    its headers, or idle between requests); when every connection is in a request it is closed
    at once, before anything is read.
    """

    def __init__(
        self, limits: HttpLimits, cap: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.limits, self.cap, self.ssl_context = limits, cap, ssl_context
        self.handler_factory: Callable[[], asyncio.Protocol] | None = None
        self.counts = dict.fromkeys(
            ("refused", "evicted", "header_timeouts", "body_timeouts", "bad_requests"), 0
        )
        self._live: dict[Guard, None] = {}  # insertion order: oldest first
        self._by_transport: dict[asyncio.BaseTransport, Guard] = {}
        self._reported = dict(self.counts)
        self._report: asyncio.TimerHandle | None = None

    def __call__(self) -> Guard:
        return Guard(self)

    @property
    def live(self) -> int:
        return len(self._live)

    def admit(self, guard: Guard) -> bool:
        if len(self._live) >= self.cap:
            victim = next((g for g in self._live if g.evictable), None)
            if victim is None:
                self.note("refused")
                return False
            self.note("evicted")
            victim.abort()
        self._live[guard] = None
        return True

    def attach(self, guard: Guard, transport: asyncio.BaseTransport) -> None:
        self._by_transport[transport] = guard

    def release(self, guard: Guard, transport: asyncio.BaseTransport | None) -> None:
        self._live.pop(guard, None)
        if transport is not None:
            self._by_transport.pop(transport, None)

    def request_started(
        self, transport: asyncio.BaseTransport | None, body_done: Callable[[], bool]
    ) -> None:
        """A request's headers are in (its handler starts): no header deadline, a body one."""
        guard = self._by_transport.get(transport) if transport is not None else None
        if guard is not None:
            guard.request_started(body_done)

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        guard = self._by_transport.get(transport) if transport is not None else None
        if guard is not None:
            guard.request_finished()

    def close_all(self) -> None:
        for guard in list(self._live):
            guard.abort()
        if self._report is not None:
            self._report.cancel()
            self._report = None

    def note(self, kind: str) -> None:
        """Count a connection cut off by a limit; warn at once, then every minute while it lasts."""
        self.counts[kind] += 1
        if self._report is None:
            log.warning(
                "HTTP clients are being cut off by the server's limits (counts follow every "
                "%.0f s while it lasts)",
                _REPORT_EVERY,
                extra={"limit": kind, "connections": len(self._live), "max_connections": self.cap},
            )
            self._reported[kind] += 1
            self._report = asyncio.get_running_loop().call_later(_REPORT_EVERY, self._summary)

    def _summary(self) -> None:
        new = {k: v - self._reported[k] for k, v in self.counts.items()}
        self._reported = dict(self.counts)
        if not any(new.values()):
            self._report = None
            return
        log.warning(
            "HTTP clients cut off in the last %.0f s",
            _REPORT_EVERY,
            extra={**new, "connections": len(self._live), "max_connections": self.cap},
        )
        self._report = asyncio.get_running_loop().call_later(_REPORT_EVERY, self._summary)


class Guard(asyncio.Protocol):
    """One accepted connection: its place under the cap, its deadlines, its TLS handshake."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None  # the TCP connection
        self._transport: asyncio.BaseTransport | None = None  # what the handler writes to
        self._handler: asyncio.Protocol | None = None
        self._pending: list[bytes] = []  # data that came with the end of the TLS handshake
        self._in_request = False
        self._closed = False
        self._header_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[None] | None = None

    @property
    def evictable(self) -> bool:
        return not self._in_request and not self._closed

    # Events of the transport, forwarded to aiohttp's handler.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        if not self._listener.admit(self):
            self._closed = True
            transport.abort()
            return
        self._arm_header_deadline()
        context = self._listener.ssl_context
        if context is None:
            self._start(transport)
        else:
            self._handshake = self._loop.create_task(self._start_tls(transport, context))

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            self._pending.append(data)
            return
        if data and not self._in_request and self._header_deadline is None:
            self._arm_header_deadline()  # the first byte of the next request on a kept-alive one
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received() if self._handler is not None else None

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._handler is not None:
            self._handler.connection_lost(exc)

    # Our side.

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            transport = await self._loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._listener.limits.read_header_timeout,
            )
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:  # failed, timed out, or the peer left: start_tls closed the socket
            self.abort()
            return
        if transport is None or self._closed:
            raw.abort()
            return
        self._start(transport)

    def _start(self, transport: asyncio.BaseTransport) -> None:
        factory = self._listener.handler_factory
        assert factory is not None, "Listener.handler_factory is not set"
        self._transport = transport
        self._listener.attach(self, transport)
        self._handler = factory()
        self._handler.connection_made(transport)
        pending, self._pending = self._pending, []
        for data in pending:
            self._handler.data_received(data)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self._loop.call_later(
            self._listener.limits.read_header_timeout, self._header_timeout
        )

    def _header_timeout(self) -> None:
        self._header_deadline = None
        if not self._in_request and not self._closed:
            self._listener.note("header_timeouts")
            self.abort()

    def request_started(self, body_done: Callable[[], bool]) -> None:
        self._in_request = True
        for handle in (self._header_deadline, self._body_deadline):
            if handle is not None:
                handle.cancel()
        self._header_deadline = self._body_deadline = None
        if not body_done():
            self._body_deadline = self._loop.call_later(
                self._listener.limits.read_body_timeout, self._body_timeout, body_done
            )

    def request_finished(self) -> None:
        self._in_request = False

    def _body_timeout(self, body_done: Callable[[], bool]) -> None:
        self._body_deadline = None
        if not self._closed and not body_done():
            self._listener.note("body_timeouts")
            self.abort()

    def abort(self) -> None:
        """Drop the connection now (RST): its descriptor is free on the next loop iteration."""
        self._release()
        if self._raw is not None:
            self._raw.abort()

    def _release(self) -> None:
        """Leave the cap and stop the clocks (idempotent; connection_lost follows an abort)."""
        self._closed = True
        for handle in (self._header_deadline, self._body_deadline):
            if handle is not None:
                handle.cancel()
        self._header_deadline = self._body_deadline = None
        self._listener.release(self, self._transport)
