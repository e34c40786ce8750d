"""A mailbox watched in all its probe folders, bridging the pool's watcher steps to asyncio futures."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from probe.arrivals import Arrivals, claimed
from probe.failure import ProbeFailure
from probe.imap.watcher import STALE_AFTER, FolderWatcher, Found, WatchSettings
from probe.m365.tokens import token_refused
from probe.result import Reason, Stage
from probe.tag import Tag

if TYPE_CHECKING:
    from probe.config import Mailbox

log = logging.getLogger("relayprobe.imap")


class MailboxWatch:
    """Watchers for the inbox folder and each junk folder of one mailbox (one connection each,
    held while a probe is awaited and for a linger after it; docs/architecture.md, "Watching many
    mailboxes").

    The future of ``expect`` resolves with the first folder that sees the tagged message. Probe
    mail of this instance and run that nobody waits for (a timed-out probe arriving late, or stale
    mail found at start-up) is deleted and handed to ``on_late``.

    ``run_id`` is the run whose mail this watch owns, and goes into the tags of the probes sent
    through it: None for the long-lived watch of the daemon (and tags made before run ids
    existed), a per-process id for the short-lived watch of ``once`` and the Nagios check. Other
    runs' mail is left alone unless older than ``stale_after`` seconds; then it is deleted without
    counting as late (docs/architecture.md, "Cleanup and nothing is lost").
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
        run_id: str | None = None,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.folders = [cfg.folder, *[f for f in junk_folders if f != cfg.folder]]
        self._token_provider = token_provider
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrivals: Arrivals[Found] = Arrivals(on_late)
        self.late = self._arrivals.late
        self.watchers = [
            FolderWatcher(
                cfg,
                folder,
                secret=secret,
                instance=instance,
                on_found=self._found_in_thread,
                run_id=run_id,
                stale_after=stale_after,
                claimed=claimed,
                token_source=self._token_in_thread,
                token_refused=self._token_refused_in_thread,
                settings=settings,
            )
            for folder in self.folders
        ]

    @property
    def cert_not_after(self) -> dt.datetime | None:
        """notAfter of the IMAP server's certificate at the latest login of any of its folders
        (None before the first login, or without TLS)."""
        seen = [w for w in self.watchers if w.logged_in_at is not None]
        latest = max(seen, key=lambda w: w.logged_in_at or 0.0, default=None)
        return latest.cert_not_after if latest is not None else None

    def placement(self, folder: str) -> str:
        return "inbox" if folder == self.cfg.folder else "junk"

    async def start(self) -> None:
        """Log in to every folder (before anything is sent); raise ProbeFailure on the first error.
        Then the pool keeps watching: logged in while probes are awaited, out between them."""
        self._loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(asyncio.to_thread(w.open) for w in self.watchers), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            try:
                await self.stop()
            except Exception as exc:  # the login failure is the news, not the failed clean-up
                log.warning("closing the watchers after a failed start failed: %s", exc)
            raise errors[0]
        for watcher in self.watchers:
            watcher.start()

    def _token_in_thread(self) -> str | None:
        # Reconnects happen in the pool's threads; a fresh token comes from the loop's provider.
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
        self._arrivals.hand_over(self._loop, found, self._deliver)

    def _deliver(self, found: Found) -> None:
        if self._arrivals.deliver(found):
            # The other folders' watchers stop expecting it too: otherwise each kept the nonce
            # for good and, thinking a probe still pending, kept polling fast.
            self._release(found.tag.nonce)

    async def ready(self) -> None:
        """Log every folder in before a probe is sent (docs/architecture.md "Detection"): a
        watcher logged out between rare probes logs in again now, so login time never counts as
        delivery and a refused login is the probe's failure (``imap_auth_failed``, ...) with
        nothing sent. Raises ProbeFailure; returns at once when all are logged in."""
        waiting = [w for w in self.watchers if not w.connected]
        if not waiting:
            return
        since = time.monotonic()
        for watcher in waiting:
            watcher.connect_soon()
        while not all(w.connected for w in waiting):
            for watcher in waiting:
                failed = watcher.last_failure
                if failed is not None and failed[0] >= since:
                    raise failed[1]
            if time.monotonic() - since > self.cfg.timeout:
                raise ProbeFailure.at(
                    Stage.DELIVER,
                    Reason.IMAP_FAILED,
                    None,
                    f"IMAP login to {self.cfg.host}:{self.cfg.port} did not finish within "
                    f"mailbox.timeout ({self.cfg.timeout:g} s); nothing was sent",
                    remedy="the IMAP server answered too slowly or this process holds the "
                    "mailbox's connection limit; tried again at the next run",
                )
            await asyncio.sleep(0.02)  # a login takes tens of milliseconds at the least

    def expect(self, tag: Tag, sent_at: float) -> asyncio.Future[Found]:
        """Register interest in ``tag`` before sending it; returns the future of its arrival."""
        assert self._loop is not None, "start() first"
        future = self._arrivals.wait(self._loop, tag.nonce)
        for watcher in self.watchers:
            watcher.expect(tag.nonce, sent_at)
        return future

    def forget(self, tag: Tag) -> None:
        """Stop waiting for ``tag``; if it still arrives it is treated as late."""
        self._arrivals.forget(tag.nonce)
        for watcher in self.watchers:
            watcher.forget(tag.nonce)

    def _release(self, nonce: str) -> None:
        self._arrivals.release(nonce)
        for watcher in self.watchers:
            watcher.forget(nonce)

    async def stop(self) -> None:
        for nonce in self._arrivals.waiting():
            self._release(nonce)  # nobody here can take them any more
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.watchers))
