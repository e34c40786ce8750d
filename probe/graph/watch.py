"""A mailbox watched over Microsoft Graph: delta polls per folder, tag checks, own-probe cleanup."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from probe.arrivals import Arrivals, claimed
from probe.failure import ProbeFailure
from probe.graph.client import GraphClient, GraphError, graph_time, odata_quote
from probe.m365.tokens import token_refused
from probe.result import Reason, Stage
from probe.tag import SUBJECT_MARKER, TAG_HEADER, Tag, verify_tag

if TYPE_CHECKING:
    from probe.config import Mailbox
    from probe.config.model import GraphPoll

log = logging.getLogger("relayprobe.graph")

#: Graph's well-known folder names (mailFolder resource); a configured name that is one of
#: these (any case) is used as it is. The IMAP defaults "INBOX" and "Junk Email" mean the
#: well-known inbox and junkemail, whatever the mailbox's language calls them.
WELL_KNOWN = frozenset(
    {
        "inbox",
        "junkemail",
        "archive",
        "deleteditems",
        "drafts",
        "sentitems",
        "outbox",
        "clutter",
        "conversationhistory",
    }
)
_ALIASES = {"junk email": "junkemail", "junk e-mail": "junkemail"}
#: What a delta poll asks for: enough to pick out probe mail without reading every message.
_DELTA_SELECT = "id,subject,receivedDateTime,internetMessageId"
#: What relayprobe reads of a candidate: the full header block (tag and verdict).
_MESSAGE_SELECT = "internetMessageHeaders,receivedDateTime,internetMessageId,parentFolderId"
_PAGE = "odata.maxpagesize=100"


def graph_folder(name: str) -> str | None:
    """The well-known Graph name for a configured folder name, or None (look it up by name)."""
    low = name.strip().lower()
    low = _ALIASES.get(low, low)
    return low if low in WELL_KNOWN else None


@dataclass
class GraphFound:
    """A probe message of this instance seen in a folder over Graph (already deleted if
    ``deleted``): the Graph counterpart of probe.imap.watcher.Found, same fields roundtrip and
    the scheduler read."""

    folder: str
    message_id: str  # Graph's id of the message
    tag: Tag
    headers: bytes  # the header block rebuilt from internetMessageHeaders; empty for late ones
    detected_at: float  # time.monotonic() when the watch saw it
    expected: bool
    deleted: bool
    cleanup_error: str | None = None
    other_run: bool = False
    received_at: dt.datetime | None = None  # Exchange's receivedDateTime


@dataclass
class _Folder:
    name: str  # as configured
    path: str  # the Graph folder segment: a well-known name or the folder's id
    delta: str | None = None  # the @odata.deltaLink of the last round


class GraphWatch:
    """The inbox and junk folders of one mailbox, polled over Graph from one thread.

    Same contract as probe.imap.watch.MailboxWatch (docs/architecture.md "Detection", "Cleanup"):
    ``start`` gets a token and reads every folder before anything is sent; ``expect`` resolves
    with the first folder that holds the tagged message; only mail whose tag verifies under
    ``secret`` and names ``instance`` is touched; own mail nobody waits for is deleted and handed
    to ``on_late``; other runs' mail is deleted only once older than ``stale_after`` seconds.

    Polling: every ``poll.fast`` s for ``poll.fast_window`` s after a send, then every
    ``poll.interval`` s while a probe is awaited, every ``poll.idle`` s otherwise. Each poll is
    one delta query per folder (only new mail comes back). A 429 pauses every poll for its
    Retry-After and is reported as throttling (``lost``), never as a delivery failure.
    """

    def __init__(
        self,
        cfg: Mailbox,
        junk_folders: list[str],
        *,
        secret: bytes,
        instance: str,
        stale_after: float,
        token_provider: Callable[[], Awaitable[str]] | None = None,
        on_late: Callable[[GraphFound], None] | None = None,
        run_id: str | None = None,
        poll: GraphPoll | None = None,
        delete: bool = True,
    ) -> None:
        from probe.config.model import GraphPoll

        self.cfg, self.run_id = cfg, run_id
        self.user = cfg.graph_user
        names = [cfg.folder, *[f for f in junk_folders if f != cfg.folder]]
        # Shown and reported as Graph names: "INBOX" is the well-known inbox.
        self.folders = [graph_folder(n) or n for n in names]
        self.folders = list(dict.fromkeys(self.folders))
        self._secret, self._instance, self._stale_after = secret, instance, stale_after
        self._token_provider = token_provider
        self.poll = poll or cfg.poll or GraphPoll()
        self.delete = delete
        self._arrivals: Arrivals[GraphFound] = Arrivals(on_late)
        self.late = self._arrivals.late
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: GraphClient | None = None
        self._state: list[_Folder] = []
        self._expected: dict[str, float] = {}  # nonce -> monotonic send time
        self._others: dict[str, tuple[_Folder, Tag]] = {}  # other runs' fresh mail, by id
        self._lock = threading.Lock()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._paused_until = 0.0
        self.throttled: list[tuple[float, float]] = []  # (monotonic, retry_after) of each 429
        self.last_error: str | None = None
        self.last_error_kind: str | None = None
        self.down_since: float | None = None
        self.last_lost_at: float | None = None
        self.cert_not_after: dt.datetime | None = None  # Graph's certificate: not reported

    # -- the surface roundtrip and the scheduler use -------------------------------------------
    @property
    def where(self) -> str:
        return f"graph {self.cfg.graph_url} mailbox {self.user}"

    def placement(self, folder: str) -> str:
        return "inbox" if folder == self.folders[0] else "junk"

    async def start(self) -> None:
        """Get a token, find every folder and read what is in it (sweep); ProbeFailure on error."""
        self._loop = asyncio.get_running_loop()
        self._client = GraphClient(
            self.cfg.graph_url or "",
            token=self._token_in_thread,
            refused=lambda token: token_refused(self._token_provider, token),
            ca_file=self.cfg.ca_file,
            timeout=self.cfg.timeout,
        )
        try:
            await asyncio.to_thread(self._open)
        except GraphError as exc:
            self._client.close()
            raise self._failure(exc) from None
        except BaseException:
            self._client.close()
            raise
        self._thread = threading.Thread(target=self._run, name="graph-watch", daemon=True)
        self._thread.start()

    async def ready(self) -> None:
        """Nothing to do before a send: the token is fetched per request and the folders are
        polled throughout (MailboxWatch.ready logs IMAP folders back in)."""

    def expect(self, tag: Tag, sent_at: float) -> asyncio.Future[GraphFound]:
        """Register interest in ``tag`` before sending it; returns the future of its arrival."""
        assert self._loop is not None, "start() first"
        future = self._arrivals.wait(self._loop, tag.nonce)
        with self._lock:
            self._expected[tag.nonce] = sent_at
        self._wake.set()  # poll now, and fast from now on
        return future

    def forget(self, tag: Tag) -> None:
        """Stop waiting for ``tag``; if it still arrives it is treated as late."""
        self._arrivals.forget(tag.nonce)
        with self._lock:
            self._expected.pop(tag.nonce, None)

    def outage(self, since: float) -> str | None:
        """What kept the mailbox unwatched at some time after ``since`` (monotonic), or None."""
        lost = self.lost(since)
        return lost[1] if lost is not None else None

    def lost(self, since: float) -> tuple[Reason, str, str] | None:
        """(reason, what happened, remedy) when the mailbox could not be watched throughout
        since ``since``: Graph throttling (429) first, then an error; None when it was."""
        throttles = [r for at, r in self.throttled if at >= since]
        if throttles:
            return (
                Reason.GRAPH_THROTTLED,
                f"{self.where}: Graph answered 429 Too Many Requests {len(throttles)} time(s) "
                f"while relayprobe waited (Retry-After {max(throttles):g} s honoured)",
                "Graph throttles one app per mailbox (10,000 requests per 10 minutes); relayprobe "
                "paused as asked and tries again at the next run. If it persists, lower the "
                "poll rates (mailbox.poll) or move other apps' traffic off this mailbox",
            )
        lost = self.last_lost_at
        if self.down_since is not None or (lost is not None and lost >= since):
            reason = (
                Reason.GRAPH_ACCESS_DENIED
                if self.last_error_kind == "denied"
                else Reason.GRAPH_FAILED
            )
            return reason, self.last_error or f"{self.where}: connection lost", _remedy(reason)
        return None

    async def stop(self) -> None:
        for nonce in self._arrivals.waiting():
            self._release(nonce)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)
        if self._client is not None:
            self._client.close()

    # -- helpers ------------------------------------------------------------------------------
    def _release(self, nonce: str) -> None:
        self._arrivals.release(nonce)
        with self._lock:
            self._expected.pop(nonce, None)

    def _token_in_thread(self) -> str:
        if self._token_provider is None or self._loop is None:
            raise ProbeFailure.at(
                Stage.DELIVER,
                Reason.CONFIG_ERROR,
                self.where,
                "no token source (mailbox.auth must be app-only oauth2)",
            )
        call = asyncio.run_coroutine_threadsafe(self._token_provider(), self._loop)
        try:
            return call.result(60)
        except ProbeFailure as failure:
            raise failure.on_side("Graph", Stage.DELIVER) from None

    def _failure(self, exc: GraphError) -> ProbeFailure:
        """A Graph error during start as the probe's failure (docs/architecture.md "Reasons")."""
        reason = {
            "throttled": Reason.GRAPH_THROTTLED,
            "denied": Reason.GRAPH_ACCESS_DENIED,
            "not_found": Reason.FOLDER_MISSING,
            "tls": Reason.TLS_FAILED,
        }.get(exc.kind, Reason.GRAPH_FAILED)
        if exc.code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI"):
            reason = Reason.GRAPH_ACCESS_DENIED  # the mailbox itself is wrong: mailbox.user
        what = str(exc)
        if exc.retry_after is not None and exc.kind == "throttled":
            what += f" (Retry-After {exc.retry_after:g} s)"
        return ProbeFailure.at(Stage.DELIVER, reason, None, what, remedy=_remedy(reason))

    # -- the watch thread ---------------------------------------------------------------------
    def _open(self) -> None:
        """Resolve the folders and read each one in full once (an initial delta round): probe
        mail already there is swept like the IMAP watcher's start-up sweep."""
        assert self._client is not None
        self._state = [_Folder(name, self._resolve(name)) for name in self.folders]
        for folder in self._state:
            self._poll(folder)

    def _resolve(self, name: str) -> str:
        assert self._client is not None
        known = graph_folder(name)
        base = f"/users/{self.user}/mailFolders"
        if known is not None:
            try:
                self._client.request("GET", f"{base}/{known}", params={"$select": "id"})
            except GraphError as exc:
                if exc.kind == "not_found" and exc.code not in ("ErrorInvalidUser",):
                    raise ProbeFailure.at(
                        Stage.DELIVER,
                        Reason.FOLDER_MISSING,
                        None,
                        f"folder {name!r}: {exc}",
                        remedy=_remedy(Reason.FOLDER_MISSING),
                    ) from None
                raise
            return known
        answer = self._client.request(
            "GET", base, params={"$filter": f"displayName eq {odata_quote(name)}", "$select": "id"}
        )
        found = answer.body.get("value") or []
        if not found:
            raise ProbeFailure.at(
                Stage.DELIVER,
                Reason.FOLDER_MISSING,
                self.where,
                f"no top-level folder named {name!r}",
                remedy=_remedy(Reason.FOLDER_MISSING),
            )
        return str(found[0]["id"])

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now < self._paused_until:  # Retry-After: not one request before it is over
                self._stop.wait(min(self._paused_until - now, 0.5))
                continue
            self._wake.clear()
            try:
                for folder in self._state:
                    self._poll(folder)
                self._sweep_others()
                self.last_error, self.last_error_kind, self.down_since = None, None, None
                backoff = 1.0
            except GraphError as exc:
                if self._stop.is_set():
                    break
                if exc.kind == "throttled":
                    pause = exc.retry_after or 0.0
                    self.throttled.append((time.monotonic(), pause))
                    self._paused_until = time.monotonic() + pause
                    log.warning("graph throttled: %s; pausing %.0f s", exc, pause)
                    continue
                self._lost(str(exc), exc.kind)
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 60.0)
                continue
            except ProbeFailure as failure:  # no token: the authority failed or refused
                if self._stop.is_set():
                    break
                denied = failure.reason is Reason.OAUTH_TOKEN_FAILED
                self._lost(failure.message, "denied" if denied else "unavailable")
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, 60.0)
                continue
            self._wake.wait(self._interval())

    def _lost(self, text: str, kind: str) -> None:
        now = time.monotonic()
        self.last_error, self.last_error_kind = text, kind
        self.down_since = self.down_since or now
        self.last_lost_at = now
        log.warning("graph watch: %s", text)

    def _interval(self) -> float:
        now = time.monotonic()
        with self._lock:
            sent = list(self._expected.values())
        if any(now - t < self.poll.fast_window for t in sent):
            return self.poll.fast
        return self.poll.interval if sent else self.poll.idle

    def _poll(self, folder: _Folder) -> None:
        """One delta round of ``folder``: every page up to the next deltaLink."""
        assert self._client is not None
        link: str | None = folder.delta
        params: dict[str, str] | None = None
        if link is None:
            link = f"/users/{self.user}/mailFolders/{folder.path}/messages/delta"
            params = {"$select": _DELTA_SELECT}
        while True:
            answer = self._client.request("GET", link, params=params, headers={"Prefer": _PAGE})
            for item in answer.body.get("value") or []:
                if "@removed" in item or SUBJECT_MARKER not in str(item.get("subject") or ""):
                    continue  # not probe mail: never read further, never touched
                self._consider(folder, item)
            params = None
            next_link = answer.body.get("@odata.nextLink")
            if next_link:
                link = str(next_link)
                continue
            folder.delta = str(answer.body.get("@odata.deltaLink") or folder.delta or "") or None
            return

    def _consider(self, folder: _Folder, item: dict[str, Any]) -> None:
        assert self._client is not None
        msg_id = str(item["id"])
        if msg_id in self._others:
            return
        detected_at = time.monotonic()
        try:
            message = self._client.request(
                "GET", f"/users/{self.user}/messages/{msg_id}", params={"$select": _MESSAGE_SELECT}
            ).body
        except GraphError as exc:
            if exc.kind == "not_found":
                return  # gone meanwhile (another client deleted it)
            raise
        headers = message.get("internetMessageHeaders") or []
        value = next(
            (
                h.get("value")
                for h in headers
                if str(h.get("name", "")).lower() == TAG_HEADER.lower()
            ),
            None,
        )
        tag = verify_tag(self._secret, value)
        if tag is None or tag.instance != self._instance:
            return  # not provably ours: never counted, never touched
        received = graph_time(message.get("receivedDateTime"))
        if tag.run != self.run_id:
            if time.time() - tag.sent_at >= self._stale_after:
                self._stale(folder, msg_id, tag, detected_at, received)
            else:
                self._others[msg_id] = (folder, tag)  # looked at again at every poll, no request
            return
        with self._lock:
            sent_at = self._expected.pop(tag.nonce, None)
        expected = sent_at is not None
        if not expected and claimed(tag.nonce):
            return  # awaited by another watch of this process, which shares the run id
        if expected and sent_at is not None:
            detected_at = self._unthrottled(detected_at, sent_at, received)
        log.info(
            "%s folder %r: probe %s of target %s found (%s)",
            self.where,
            folder.name,
            tag.probe_id,
            tag.target,
            "expected" if expected else "late or stale",
        )
        found = GraphFound(
            folder.name,
            msg_id,
            tag,
            _header_block(headers) if expected else b"",
            detected_at,
            expected,
            deleted=False,
            received_at=received,
        )
        self._delete(found)
        self._found(found)

    def _unthrottled(
        self, detected_at: float, sent_at: float, received: dt.datetime | None
    ) -> float:
        """After a 429 pause the watch saw the probe late through no fault of the relay: take
        Exchange's receivedDateTime (whole seconds) as the moment it arrived instead."""
        if received is None or not any(at >= sent_at for at, _r in self.throttled):
            return detected_at
        ago = max(0.0, time.time() - received.timestamp())
        return max(sent_at, min(detected_at, time.monotonic() - ago))

    def _stale(
        self, folder: _Folder, msg_id: str, tag: Tag, at: float, received: dt.datetime | None
    ) -> None:
        log.info(
            "%s folder %r: stale probe %s of another run (%s) removed",
            self.where,
            folder.name,
            tag.probe_id,
            tag.run or "the daemon",
        )
        found = GraphFound(
            folder.name, msg_id, tag, b"", at, False, False, other_run=True, received_at=received
        )
        self._delete(found)
        self._found(found)

    def _sweep_others(self) -> None:
        """Other runs' mail seen while fresh: delete it once provably stale (no request until
        then; docs/architecture.md "Cleanup and nothing is lost")."""
        now = time.time()
        for msg_id, (folder, tag) in list(self._others.items()):
            if now - tag.sent_at >= self._stale_after:
                del self._others[msg_id]
                self._stale(folder, msg_id, tag, time.monotonic(), None)

    def _delete(self, found: GraphFound) -> None:
        """DELETE /users/{id}/messages/{id}: only ever called for a verified tag of this
        instance (docs/m365.md#microsoft-graph)."""
        assert self._client is not None
        if not self.delete:
            return
        try:
            self._client.request("DELETE", f"/users/{self.user}/messages/{found.message_id}")
            found.deleted = True
        except GraphError as exc:
            if exc.kind == "throttled":
                raise  # paused by the caller; the message stays and is found again later
            if exc.kind == "not_found":
                found.deleted = True  # already gone
                return
            found.cleanup_error = f"{self.where} folder {found.folder!r}: {exc}"

    def _found(self, found: GraphFound) -> None:
        self._arrivals.hand_over(self._loop, found, self._deliver)

    def _deliver(self, found: GraphFound) -> None:
        if self._arrivals.deliver(found):
            self._release(found.tag.nonce)


def _header_block(headers: list[dict[str, Any]]) -> bytes:
    """internetMessageHeaders as an RFC 5322 header block, for probe.verdict's parser."""
    lines = [f"{h.get('name', '')}: {h.get('value', '')}" for h in headers if h.get("name")]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", errors="replace")


def _remedy(reason: Reason) -> str:
    return {
        Reason.GRAPH_THROTTLED: (
            "Graph throttles one app per mailbox (10,000 requests per 10 minutes); relayprobe "
            "waits for Retry-After and tries again at the next run"
        ),
        Reason.GRAPH_ACCESS_DENIED: (
            "grant the app the Mail.ReadWrite application permission (admin consent) and scope "
            "it to this mailbox with RBAC for Applications; check mailbox.user "
            "(docs/configuration.md#microsoft-graph)"
        ),
        Reason.FOLDER_MISSING: (
            "name the folder as Graph knows it: a well-known name (inbox, junkemail) or the "
            "display name of a top-level folder"
        ),
        Reason.TLS_FAILED: (
            "Graph's certificate did not verify: trust its CA (mailbox.ca_file, or the system "
            "store) or check for a TLS-inspecting proxy"
        ),
    }.get(
        reason,
        "Graph could not be reached or answered 5xx; tried again at the next run (a probe that "
        "arrived meanwhile is found then, counted as late and removed)",
    )
