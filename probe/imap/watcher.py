"""One IMAP folder watched in steps on the shared pool: polls while a probe is awaited, tag
verification, cleanup of own probes, connection kept only while it pays."""

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
from probe.imap.pool import WatchPool, connection_slots, default_pool
from probe.result import Reason, Stage
from probe.tag import SUBJECT_MARKER, TAG_HEADER, Tag, verify_tag

if TYPE_CHECKING:
    from probe.config import Mailbox

log = logging.getLogger("relayprobe.imap")

_TAG_FIELD = f"BODY.PEEK[HEADER.FIELDS ({TAG_HEADER.upper()})]".encode()
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
    """How eagerly to look (docs/architecture.md, "Watching many mailboxes").

    Polls (NOOP + UID SEARCH) every ``fast_interval`` right after a send, every ``wait_interval``
    while a probe is still awaited (``slow_wait_interval`` once it is ``slow_after`` seconds
    old), and every ``linger_interval`` while it lingers after the last awaited probe; then the
    connection is logged out until the next ``expect``. The linger follows the mailbox's own
    cadence: when its probes came at most ``linger`` seconds apart, the connection is kept until
    just after the next one is due (reused, never a login per probe); otherwise it is logged out
    ``short_linger`` seconds after the last one, and the next probe logs in again (before its send,
    so the login is not delivery latency).
    """

    fast_interval: float = 0.05
    fast_window: float = 3.0
    wait_interval: float = 0.5
    slow_after: float = 30.0
    slow_wait_interval: float = 2.0
    linger: float = 120.0
    short_linger: float = 10.0
    linger_interval: float = 10.0
    # Sweep the folder again this often for other runs' stale mail: it arrived while it was
    # still fresh (and was left alone), and a long-lived watcher would otherwise keep it forever.
    resweep_interval: float = 1800.0
    delete: bool = True


class FolderWatcher:
    """Watches one folder of one mailbox in steps run by a shared pool; never blocks the loop.

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
        pool: WatchPool | None = None,
    ) -> None:
        self.cfg, self.folder = cfg, folder
        self._pool = pool or default_pool()
        self._slot_key = (cfg.host, cfg.port, cfg.auth.username.lower())
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
        self._swept_at = time.monotonic()
        self._active_until = 0.0  # monotonic end of the linger after the last awaited probe
        self._last_expect: float | None = None
        self._gap: float | None = None  # seconds between the last two probes into this folder
        self._retry_at = 0.0  # no reconnect before this (backoff after a lost connection)
        self._backoff = 1.0
        self.last_error: str | None = None
        # The last failed (re)connect as the probe's failure, and when (monotonic): what
        # MailboxWatch.ready reports when a probe is due and the login fails.
        self.last_failure: tuple[float, ProbeFailure] | None = None
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
        if self._client is not None:
            return
        if not connection_slots.acquire(self._slot_key, self.cfg.timeout):
            raise ProbeFailure.at(
                Stage.DELIVER,
                Reason.IMAP_FAILED,
                imap.where(self.cfg),
                f"{connection_slots.limit} IMAP connections to {self.cfg.auth.username} are "
                f"open in this process already (Microsoft allows {connection_slots.limit} per "
                "mailbox)",
                remedy="fewer targets or folders on this mailbox, or probes further apart; "
                "tried again at the next run",
            )
        try:
            client = self._login()
            self.cert_not_after, self.logged_in_at = imap.cert_not_after(client), time.monotonic()
            try:
                status = imap.select(self.cfg, client, self.folder)
            except ProbeFailure:
                imap._quietly_close(client)
                raise
        except BaseException:
            connection_slots.release(self._slot_key)
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

    def _login(self) -> imapclient.IMAPClient:
        token = self._token_source()
        try:
            return imap.connect(self.cfg, token=token)
        except ProbeFailure as failure:
            # A cached token the server refused (key rotated, consent changed): drop it and try
            # once with a fresh one; a fresh token refused is the real auth failure.
            if failure.reason is not Reason.IMAP_AUTH_FAILED or not token:
                raise
            if not self._token_refused(token):
                raise
            return imap.connect(self.cfg, token=self._token_source())

    def start(self) -> None:
        """Hand the (opened) watcher to the pool: it lingers, then logs out until expected."""
        self._active_until = time.monotonic() + self._linger()
        self._pool.wake(self)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect_soon(self) -> None:
        """A probe is due: log in now if logged out (no backoff wait), and stay for the linger."""
        self._active_until = max(self._active_until, time.monotonic() + self._linger())
        self._retry_at = 0.0
        if not self._stop.is_set():
            self._pool.wake(self)

    def expect(self, nonce: str, sent_at: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._expected[nonce] = sent_at
            if self._last_expect is not None:
                self._gap = now - self._last_expect
            self._last_expect = now
        if not self._stop.is_set():
            self._pool.wake(self)

    def forget(self, nonce: str) -> None:
        with self._lock:
            self._expected.pop(nonce, None)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._pool.forget(self, timeout)
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            imap._quietly_close(client)
            connection_slots.release(self._slot_key)

    # -- one step, run by the pool ---------------------------------------------------------
    def step(self) -> float | None:
        """Connect if needed, look for new mail once; the seconds until the next look, or None
        when nothing is awaited and the linger is over (logged out until the next ``expect``)."""
        if self._stop.is_set():
            return None
        now = time.monotonic()
        settings = self.settings
        with self._lock:
            ages = [now - sent for sent in self._expected.values()]
        if ages:
            self._active_until = now + self._linger()
        elif now >= self._active_until:
            self._close()  # nothing awaited for a while: the next probe logs in again
            return None
        try:
            if self._client is None:
                if now < self._retry_at:
                    return self._retry_at - now
                self.open()  # looks for mail that came while logged out
                self._backoff = 1.0
                self.last_error, self.down_since, self.last_failure = None, None, None
            else:
                self._client.noop()
                self._check_new()
                if now - self._swept_at >= settings.resweep_interval:
                    self._sweep(resweep=True)
        except (ProbeFailure, OSError, IMAPClientError) as exc:
            if self._stop.is_set():
                return None
            if self._client is None:  # the (re)connect failed: ready() names why
                self.last_failure = (time.monotonic(), _as_failure(self.cfg, exc))
            self._lost(exc)
            return self._retry_at - time.monotonic()
        if any(age < settings.fast_window for age in ages):
            # Right after a send: NOOP makes a server show new mail at once (Dovecot holds IDLE
            # pushes back ~0.5 s), so a short poll measures delivery close to the real landing.
            return settings.fast_interval
        if ages:
            fresh = min(ages) < settings.slow_after
            return settings.wait_interval if fresh else settings.slow_wait_interval
        resweep = self._swept_at + settings.resweep_interval - now
        return max(0.0, min(settings.linger_interval, resweep, self._active_until - now))

    def _linger(self) -> float:
        """How long to stay logged in after the last awaited probe: until just after the next
        one when probes come at most ``linger`` apart (reuse pays), else ``short_linger``."""
        gap, settings = self._gap, self.settings
        if gap is not None and gap <= settings.linger:
            return gap + settings.short_linger
        return settings.short_linger

    def _lost(self, exc: BaseException) -> None:
        self.last_error = f"{imap.where(self.cfg)} folder {self.folder!r}: {imap.server_text(exc)}"
        now = time.monotonic()
        self.down_since = self.down_since or now
        self.last_lost_at = now
        log.warning("imap watcher lost its connection: %s", self.last_error)
        self._close()
        # Jittered exponential backoff keeps many probes from reconnecting in lock-step.
        self._retry_at = now + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, 60.0)

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


def _as_failure(cfg: Mailbox, exc: BaseException) -> ProbeFailure:
    if isinstance(exc, ProbeFailure):
        return exc
    return ProbeFailure.at(
        Stage.DELIVER, Reason.IMAP_FAILED, imap.where(cfg), imap.server_text(exc)
    )


def _header_value(raw: bytes, name: str) -> str | None:
    """The unfolded value of header ``name`` in a small header block, or None."""
    text = raw.decode("ascii", errors="replace").replace("\r\n", "\n")
    unfolded = text.replace("\n ", " ").replace("\n\t", " ")
    prefix = name.lower() + ":"
    for line in unfolded.split("\n"):
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None
