"""One IMAP folder watched in a thread: IDLE or polling, tag verification, cleanup of own probes."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import imapclient
from imapclient.exceptions import IMAPClientError

from probe.failure import ProbeFailure
from probe.imap import session as imap
from probe.result import Reason
from probe.tag import SUBJECT_MARKER, TAG_HEADER, Tag, verify_tag

if TYPE_CHECKING:
    from probe.config import Mailbox

log = logging.getLogger("relayprobe.imap")

_TAG_FIELD = f"BODY.PEEK[HEADER.FIELDS ({TAG_HEADER.upper()})]".encode()
# Seconds per idle_check: a local poll() only, no traffic, so a new probe (which switches to fast
# polling) or a stop is noticed within this time.
_IDLE_SLICE = 0.05
_REIDLE_AFTER = 25 * 60  # RFC 2177 servers drop IDLE after 30 min; Microsoft after ~29
#: Seconds after its (authenticated) send time from which another run's probe mail is provably
#: stale: no run waits that long, so a sweep may delete it (docs/architecture.md, "Cleanup").
STALE_AFTER = 3600.0


@dataclass
class Found:
    """A probe message of this instance seen in a folder (already deleted if ``deleted``).

    ``other_run``: another run's mail (not this watcher's run id), taken only because it was
    provably stale; it is never anyone's late delivery.
    """

    folder: str
    uid: int
    tag: Tag
    headers: bytes  # the full header block; empty for late/stale ones
    detected_at: float  # time.monotonic() when the watcher saw it
    expected: bool  # True when a running probe was waiting for it
    deleted: bool
    cleanup_error: str | None = None
    other_run: bool = False


@dataclass
class WatchSettings:
    """How eagerly to look: fast NOOP polls right after a send, IDLE (or slow polls) otherwise."""

    fast_interval: float = 0.05
    fast_window: float = 3.0
    poll_interval: float = 2.0  # servers without IDLE
    idle_recheck: float = 2.0  # leave IDLE and search this often while a probe is expected
    # Sweep the folder again this often for other runs' stale mail: it arrived while it was
    # still fresh (and was left alone), and a long-lived watcher would otherwise keep it forever.
    resweep_interval: float = 1800.0
    delete: bool = True


class FolderWatcher:
    """Watches one folder of one mailbox from its own thread; never blocks the event loop.

    Only messages whose tag verifies under ``secret`` and names ``instance`` are touched;
    everything else in the mailbox is left exactly as it is. Of those, mail of this watcher's
    ``run_id`` is its own (awaited, or late); mail of another run id (another process on the same
    config) is deleted only once older than ``stale_after`` seconds. ``claimed(nonce)`` says that
    another watch of this process, sharing the run id, waits for that probe.
    """

    def __init__(
        self,
        cfg: Mailbox,
        folder: str,
        *,
        secret: bytes,
        instance: str,
        on_found: Callable[[Found], None],
        run_id: str | None = None,
        stale_after: float = STALE_AFTER,
        claimed: Callable[[str], bool] = lambda nonce: False,
        token_source: Callable[[], str | None] = lambda: None,
        token_refused: Callable[[str], bool] = lambda token: False,
        settings: WatchSettings | None = None,
    ) -> None:
        self.cfg, self.folder = cfg, folder
        self._secret, self._instance = secret, instance
        self.run_id, self._stale_after, self._claimed = run_id, stale_after, claimed
        self._on_found, self._token_source = on_found, token_source
        self._token_refused = token_refused
        self.settings = settings or WatchSettings()
        self._client: imapclient.IMAPClient | None = None
        self._last_uid = 0
        self._uidvalidity: int | None = None
        self._expected: dict[str, float] = {}  # nonce -> monotonic time the probe was sent
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._swept_at = time.monotonic()
        self.last_error: str | None = None
        # time.monotonic() of the last lost connection; None while the watcher is connected.
        self.down_since: float | None = None
        self.last_lost_at: float | None = None
        # The IMAP server's certificate notAfter at this watcher's latest login, and when
        # (monotonic) that was: MailboxWatch.cert_not_after takes the newest of its folders.
        self.cert_not_after: dt.datetime | None = None
        self.logged_in_at: float | None = None

    # -- called from the event loop's side -------------------------------------------------
    def open(self) -> None:
        """Connect, log in, select and sweep; blocking (run it in a thread). Raises ProbeFailure."""
        token = self._token_source()
        try:
            client = imap.connect(self.cfg, token=token)
        except ProbeFailure as failure:
            # A cached token the server refused (key rotated, consent changed): drop it and try
            # once with a fresh one; a fresh token refused is the real auth failure.
            if failure.reason is not Reason.IMAP_AUTH_FAILED or not token:
                raise
            if not self._token_refused(token):
                raise
            client = imap.connect(self.cfg, token=self._token_source())
        self.cert_not_after, self.logged_in_at = imap.cert_not_after(client), time.monotonic()
        try:
            status = imap.select(self.cfg, client, self.folder)
        except ProbeFailure:
            imap._quietly_close(client)
            raise
        self._client = client
        uidvalidity = int(status.get(b"UIDVALIDITY", 0))  # type: ignore[call-overload]
        if self._uidvalidity is not None and uidvalidity != self._uidvalidity:
            self._last_uid = 0  # the folder was recreated: every UID means something new
        self._uidvalidity = uidvalidity
        if self._last_uid == 0:
            self._sweep()
            self._last_uid = int(status.get(b"UIDNEXT", 1)) - 1  # type: ignore[call-overload]
        else:
            self._check_new()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"imap-{self.folder}", daemon=True)
        self._thread.start()

    def expect(self, nonce: str, sent_at: float) -> None:
        with self._lock:
            self._expected[nonce] = sent_at
        self._wake.set()

    def forget(self, nonce: str) -> None:
        with self._lock:
            self._expected.pop(nonce, None)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            imap._quietly_close(self._client)
            self._client = None

    # -- the watcher thread ----------------------------------------------------------------
    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if self._client is None:
                    self.open()
                    backoff = 1.0
                    self.last_error, self.down_since = None, None
                self._watch_once()
            except (ProbeFailure, OSError, IMAPClientError) as exc:
                if self._stop.is_set():
                    break
                self.last_error = (
                    f"{imap.where(self.cfg)} folder {self.folder!r}: {imap.server_text(exc)}"
                )
                now = time.monotonic()
                self.down_since = self.down_since or now
                self.last_lost_at = now
                log.warning("imap watcher lost its connection: %s", self.last_error)
                if self._client is not None:
                    imap._quietly_close(self._client)
                    self._client = None
                # Jittered exponential backoff keeps many probes from reconnecting in lock-step.
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 60.0)

    def _fast(self) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(now - sent < self.settings.fast_window for sent in self._expected.values())

    def _watch_once(self) -> None:
        assert self._client is not None
        if self._fast():
            # Right after a send: NOOP makes a server show new mail at once (Dovecot holds IDLE
            # pushes back ~0.5 s), so a short poll measures delivery close to the real landing.
            self._client.noop()
            self._check_new()
            self._stop.wait(self.settings.fast_interval)
            return
        if time.monotonic() - self._swept_at >= self.settings.resweep_interval:
            self._sweep(resweep=True)
        if self._client.has_capability("IDLE"):
            self._idle()
        else:
            self._client.noop()
            self._check_new()
            self._wake.clear()
            self._wake.wait(self.settings.poll_interval)

    def _idle(self) -> None:
        assert self._client is not None
        self._wake.clear()
        self._client.idle()
        started = time.monotonic()
        with self._lock:
            waiting = bool(self._expected)
        # imaplib reads through a buffered file: an EXISTS sent together with "+ idling" can sit
        # in that buffer where idle_check's poll() never sees it. While a probe is expected,
        # leave IDLE and look every few seconds so such a miss costs seconds, not a timeout.
        limit = (
            self.settings.idle_recheck
            if waiting
            else min(_REIDLE_AFTER, self.settings.resweep_interval)
        )
        try:
            while not (self._stop.is_set() or self._wake.is_set()):
                if (
                    self._client.idle_check(timeout=_IDLE_SLICE)
                    or time.monotonic() - started > limit
                ):
                    break
        finally:
            if not self._stop.is_set():
                self._client.idle_done()
        # Always look after leaving IDLE: an EXISTS that arrives while DONE is in flight comes
        # back with DONE's completion and would otherwise be lost until the next push.
        if not self._stop.is_set():
            self._check_new()

    def _check_new(self) -> None:
        assert self._client is not None
        untagged = self._client._imap.untagged_responses  # imaplib's store of unread untagged data
        for _ in range(3):
            untagged.pop("EXISTS", None)
            uids = [
                u
                for u in self._client.search(["UID", f"{self._last_uid + 1}:*"])
                if u > self._last_uid
            ]
            if uids:
                self._last_uid = max(uids)
                self._consider(uids)
            # A server makes new mail visible at the end of a command (Dovecot does), so mail
            # that landed during this SEARCH is announced by an EXISTS riding on its reply, and
            # no IDLE will push it again: look once more in that case.
            if not untagged.pop("EXISTS", None):
                return

    def _sweep(self, *, resweep: bool = False) -> None:
        """Look at what is already in the folder: own probes that arrived late or are stale, and
        other runs' stale mail. A ``resweep`` (every ``resweep_interval``) looks for the latter
        only, among mail already seen: own mail was handled when it arrived."""
        assert self._client is not None
        self._swept_at = time.monotonic()
        if not resweep:
            self._consider(self._client.search(["SUBJECT", SUBJECT_MARKER]))
            return
        seen = self._client.search(["UNDELETED", "SUBJECT", SUBJECT_MARKER])
        self._consider([u for u in seen if u <= self._last_uid], own=False)

    def _consider(self, uids: list[int], *, own: bool = True) -> None:
        assert self._client is not None
        if not uids:
            return
        detected_at = time.monotonic()
        fetched = self._client.fetch(uids, [_TAG_FIELD])
        for uid, data in fetched.items():
            raw = next((v for k, v in data.items() if k.startswith(b"BODY")), b"")
            tag = verify_tag(self._secret, _header_value(raw, TAG_HEADER))
            if tag is None or tag.instance != self._instance:
                continue  # not provably ours: never counted, never touched
            if tag.run != self.run_id:
                # Another process on this config (a daemon, `once` or the Nagios check) may still
                # wait for it: hands off until its authenticated send time proves that no run
                # can, so a crashed run's mail does not stay forever (docs/architecture.md).
                if time.time() - tag.sent_at >= self._stale_after:
                    log.info(
                        "%s folder %r: stale probe %s of another run (%s) removed (UID %s)",
                        imap.where(self.cfg),
                        self.folder,
                        tag.probe_id,
                        tag.run or "the daemon",
                        uid,
                    )
                    self._on_found(self._take(uid, tag, detected_at, False, other_run=True))
                continue
            if not own:
                continue
            with self._lock:
                expected = self._expected.pop(tag.nonce, None) is not None
            if not expected and self._claimed(tag.nonce):
                continue  # awaited by another watch of this process, which shares the run id
            log.info(
                "%s folder %r: probe %s of target %s found (UID %s, %s)",
                imap.where(self.cfg),
                self.folder,
                tag.probe_id,
                tag.target,
                uid,
                "expected" if expected else "late or stale",
            )
            self._on_found(self._take(uid, tag, detected_at, expected))

    def _take(
        self, uid: int, tag: Tag, detected_at: float, expected: bool, *, other_run: bool = False
    ) -> Found:
        assert self._client is not None
        headers = b""
        if expected:
            data = self._client.fetch([uid], [b"BODY.PEEK[HEADER]"]).get(uid, {})
            headers = next((v for k, v in data.items() if k.startswith(b"BODY")), b"")
        found = Found(
            self.folder,
            uid,
            tag,
            headers,
            detected_at,
            expected,
            deleted=False,
            other_run=other_run,
        )
        if self.settings.delete:
            try:
                self._client.delete_messages([uid])
                if self._client.has_capability("UIDPLUS"):
                    self._client.uid_expunge([uid])  # only this UID: others' \Deleted mail stays
                found.deleted = True
            except IMAPClientError as exc:
                found.cleanup_error = (
                    f"{imap.where(self.cfg)} folder {self.folder!r} UID {uid}: {exc}"
                )
        return found


def _header_value(raw: bytes, name: str) -> str | None:
    """The unfolded value of header ``name`` in a small header block, or None."""
    text = raw.decode("ascii", errors="replace").replace("\r\n", "\n")
    unfolded = text.replace("\n ", " ").replace("\n\t", " ")
    prefix = name.lower() + ":"
    for line in unfolded.split("\n"):
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None
