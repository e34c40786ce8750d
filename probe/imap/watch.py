"""A mailbox watched in all its probe folders, bridging the watcher threads to asyncio futures."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from probe.failure import ProbeFailure
from probe.imap.watcher import FolderWatcher, Found, WatchSettings
from probe.m365.tokens import token_refused
from probe.result import Stage
from probe.tag import Tag

if TYPE_CHECKING:
    from probe.config import Mailbox

log = logging.getLogger("relayprobe.imap")


class MailboxWatch:
    """Watchers for the inbox folder and each junk folder of one mailbox (one connection each).

    ``wait_for`` resolves with the first folder that sees the tagged message. Probe mail of this
    instance that nobody waits for (a timed-out probe arriving late, or stale mail found at
    start-up) is deleted and handed to ``on_late``.
    """

    def __init__(
        self,
        cfg: Mailbox,
        junk_folders: list[str],
        *,
        secret: bytes,
        instance: str,
        token_provider: Callable[[], Awaitable[str]] | None = None,
        on_late: Callable[[Found], None] | None = None,
        settings: WatchSettings | None = None,
    ) -> None:
        self.cfg = cfg
        self.folders = [cfg.folder, *[f for f in junk_folders if f != cfg.folder]]
        self._token_provider = token_provider
        self._on_late = on_late
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, asyncio.Future[Found]] = {}
        # Bounded: a long-running daemon counts late mail through on_late, not this list.
        self.late: collections.deque[Found] = collections.deque(maxlen=1000)
        self.watchers = [
            FolderWatcher(
                cfg,
                folder,
                secret=secret,
                instance=instance,
                on_found=self._found_in_thread,
                token_source=self._token_in_thread,
                token_refused=self._token_refused_in_thread,
                settings=settings,
            )
            for folder in self.folders
        ]

    def placement(self, folder: str) -> str:
        return "inbox" if folder == self.cfg.folder else "junk"

    async def start(self) -> None:
        """Log in to every folder (before anything is sent); raise ProbeFailure on the first error."""
        self._loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(asyncio.to_thread(w.open) for w in self.watchers), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]
        for watcher in self.watchers:
            watcher.start()

    def _token_in_thread(self) -> str | None:
        # Reconnects happen in watcher threads; a fresh token comes from the loop's provider.
        if self._token_provider is None or self._loop is None:
            return None
        call = asyncio.run_coroutine_threadsafe(self._token_provider(), self._loop)
        try:
            return call.result(60)
        except ProbeFailure as failure:
            raise failure.on_side("IMAP", Stage.DELIVER) from None

    def _token_refused_in_thread(self, token: str) -> bool:
        return token_refused(self._token_provider, token)

    def outage(self, since: float) -> str | None:
        """The IMAP error that kept a folder unwatched at some time after ``since`` (monotonic),
        while waiting for a probe; None when every folder was watched throughout."""
        for watcher in self.watchers:
            lost = watcher.last_lost_at
            if watcher.down_since is not None or (lost is not None and lost >= since):
                return watcher.last_error or f"{watcher.folder!r}: connection lost"
        return None

    def _found_in_thread(self, found: Found) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop shut down while a watcher was busy
            loop.call_soon_threadsafe(self._deliver, found)

    def _deliver(self, found: Found) -> None:
        future = self._waiting.pop(found.tag.nonce, None)
        if future is not None and not future.done():
            future.set_result(found)
            return
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

    def expect(self, tag: Tag, sent_at: float) -> asyncio.Future[Found]:
        """Register interest in ``tag`` before sending it; returns the future of its arrival."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[Found] = self._loop.create_future()
        self._waiting[tag.nonce] = future
        for watcher in self.watchers:
            watcher.expect(tag.nonce, sent_at)
        return future

    def forget(self, tag: Tag) -> None:
        """Stop waiting for ``tag``; if it still arrives it is treated as late."""
        self._waiting.pop(tag.nonce, None)
        for watcher in self.watchers:
            watcher.forget(tag.nonce)

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.watchers))
