"""EmbeddedMailSystem: submission + MX + verdict + IMAP mailboxes in one asyncio loop, on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import secrets
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from aiosmtpd.smtp import SMTP

from .keys import make_dkim_key, make_tls
from .mailstore import MailStore
from .relay import Accepted, MxHandler, SubmissionHandler, mx_server, submission_server
from .verdict import AUTHSERV_ID, StaticDns, dkim_signer, evaluate

log = logging.getLogger(__name__)

_HEADER_END = re.compile(rb"\r\n\r\n")
_FORGED_AR = re.compile(
    rb"^Authentication-Results:[ \t]*" + re.escape(AUTHSERV_ID.encode()) + rb"\b.*?\r\n(?![ \t])",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


class EmbeddedMailSystem:
    """A pure-Python stand-in for Microsoft 365 (smtp.office365.com:587 + IMAP), for demos and tests.

    Mail path: submission (STARTTLS, AUTH, send-as check) -> DKIM signing -> receiving side as if
    from ``sender_ip`` (in SPF) -> SPF/DKIM/DMARC -> one Authentication-Results header -> INBOX or
    ``Junk Email``. Mail to the MX listener is evaluated as if from ``direct_send_ip`` (not in
    SPF), so a forged ``@demo.test`` sender fails DMARC and is junked, like EOP does.
    """

    domain = "demo.test"
    sender = "probe@demo.test"
    recipient = "inbox@demo.test"
    dkim_selector = "demo"
    sender_ip = "192.0.2.25"  # the sender's "public IP": only a value given to SPF evaluation
    direct_send_ip = "198.51.100.7"  # where MX traffic is taken to come from
    imap_security = "tls"  # implicit TLS, like outlook.office365.com:993
    hostname = "smtp.demo.test"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        submission_port: int = 0,
        mx_port: int = 0,
        imap_port: int = 0,
        imap_starttls_port: int = 0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.submission_port = submission_port
        self.mx_port = mx_port
        self.imap_port = imap_port  # implicit TLS (imap_security), like port 993
        self.imap_starttls_port = imap_starttls_port  # plain + STARTTLS required, like 143
        self.ca_file = self.state_dir / "tls" / "ca.crt"
        # Random per instance: nothing outside this process needs to know them in advance.
        self.sender_password = secrets.token_urlsafe(18)
        self.recipient_password = secrets.token_urlsafe(18)
        self.deliveries = 0
        self.dns = StaticDns()
        self._store: MailStore | None = None
        self._submission: SubmissionHandler | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._smtp_sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._pending: set[asyncio.Task[None]] = set()
        self._sign: Callable[[bytes], bytes] | None = None
        self._queue_seq = 0

    def __repr__(self) -> str:  # passwords stay out of reprs and logs
        return (
            f"EmbeddedMailSystem(host={self.host!r}, submission_port={self.submission_port}, "
            f"mx_port={self.mx_port}, imap_port={self.imap_port}, "
            f"imap_starttls_port={self.imap_starttls_port})"
        )

    async def __aenter__(self) -> EmbeddedMailSystem:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def store(self) -> MailStore:
        if self._store is None:
            raise RuntimeError("EmbeddedMailSystem is not started: call start() first")
        return self._store

    def set_auth_refused(self, refused: bool) -> None:
        """While True, every AUTH on the submission port answers 535 5.7.3."""
        if self._submission is None:
            raise RuntimeError("EmbeddedMailSystem is not started: call start() first")
        self._submission.auth_refused = refused

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(self.state_dir, self.host)
        self.ca_file = tls.ca_file
        # 2048-bit RSA generation can take a second: keep the loop responsive meanwhile.
        dkim_key = await asyncio.to_thread(make_dkim_key)
        self._sign = dkim_signer(self.dkim_selector, self.domain, dkim_key.private_pem)
        self.dns.txt.update(
            {
                self.domain: [f"v=spf1 ip4:{self.sender_ip} -all"],
                f"_dmarc.{self.domain}": ["v=DMARC1; p=quarantine"],
                f"{self.dkim_selector}._domainkey.{self.domain}": [dkim_key.txt_record.decode()],
                # A partner whose direct send is allowed, and a domain that only ever fails.
                "partner.test": [f"v=spf1 ip4:{self.direct_send_ip} -all"],
                "_dmarc.partner.test": ["v=DMARC1; p=none"],
                "spoof.test": ["v=spf1 -all"],
                "_dmarc.spoof.test": ["v=DMARC1; p=reject"],
            }
        )
        self._store = MailStore(tls.server_context())
        passwords = {self.sender: self.sender_password, self.recipient: self.recipient_password}
        for address, password in passwords.items():
            await self._store.add_user(address, password)

        tls_ctx, name = tls.server_context(), self.hostname
        self._submission = submission = SubmissionHandler(
            self.domain, self._store.has_user, self._receive, passwords
        )
        mx = MxHandler(self.domain, self._store.has_user, self._receive)
        loop = asyncio.get_running_loop()

        def tracked(session: SMTP) -> SMTP:
            self._smtp_sessions.add(session)  # so stop() can close open SMTP sessions
            return session

        listeners: list[tuple[str, Callable[[], SMTP]]] = [
            ("submission_port", lambda: tracked(submission_server(submission, tls_ctx, name))),
            ("mx_port", lambda: tracked(mx_server(mx, tls_ctx, name))),
        ]
        try:
            for attr, protocol_factory in listeners:
                server = await loop.create_server(
                    protocol_factory, host=self.host, port=getattr(self, attr)
                )
                self._servers.append(server)
                setattr(self, attr, server.sockets[0].getsockname()[1])
            self.imap_port = await self._store.start(self.host, self.imap_port)
            self.imap_starttls_port = await self._store.start_starttls(
                self.host, self.imap_starttls_port
            )
        except BaseException:
            await self.stop()
            raise
        log.info("embedded mail system up: %r", self)

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for session in list(self._smtp_sessions):
            if session.transport is not None:
                session.transport.close()
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5)
        for server in servers:
            await server.wait_closed()
        if self._store is not None:
            await self._store.stop()

    def _queue_id(self) -> str:
        self._queue_seq += 1
        return f"{secrets.token_hex(4).upper()}{self._queue_seq:04d}"

    async def _receive(self, accepted: Accepted) -> str:
        """aiosmtpd's DATA hook lands here; a failure is a 451, never a traceback to the client."""
        queue_id = self._queue_id()
        try:
            await self._process(accepted, queue_id)
        except Exception:
            log.exception("embedded delivery of %s failed (via %s)", queue_id, accepted.via)
            return f"451 4.3.0 Temporary server error, see the embedded system's log ({queue_id})"
        return f"250 2.0.0 OK {queue_id} queued"

    async def _process(self, accepted: Accepted, queue_id: str) -> None:
        """Stamp, judge and file (or schedule) the message for every recipient."""
        content = re.sub(rb"\r?\n", b"\r\n", accepted.content)  # IMAP wants CRLF everywhere
        if accepted.via == "submission":
            content = self._submission_hop(content, accepted, queue_id)
            client_ip, helo = self.sender_ip, "smtp-out.demo.test"
        else:
            client_ip, helo = self.direct_send_ip, accepted.helo or "unknown"
        # RFC 8601 section 5: drop A-R headers that claim to be ours (headers only, not body).
        headers = _headers(content)
        content = _FORGED_AR.sub(b"", headers) + content[len(headers) :]
        verdict = evaluate(
            self.dns, content, client_ip=client_ip, mail_from=accepted.mail_from, helo=helo
        )
        header_junk = b"\r\nx-testbed-junk:" in b"\r\n" + _headers(content).lower()
        for rcpt in accepted.recipients:
            received = (
                f"Received: from {helo} ({helo} [{client_ip}]) by {AUTHSERV_ID} "
                f"(relayprobe embedded) with {'ESMTPS' if accepted.tls else 'ESMTP'} "
                f"id {queue_id} for <{rcpt.address}>; {_now()}\r\n"
            )
            stamped = (
                f"Authentication-Results: {verdict.header_value()}\r\n{received}".encode() + content
            )
            junk = verdict.junk_by_policy or header_junk or rcpt.junk
            folder = "Junk Email" if junk else "INBOX"
            if rcpt.delay:
                task = asyncio.create_task(
                    self._deliver_later(rcpt.delay, rcpt.mailbox, folder, stamped)
                )
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            else:
                await self._deliver(rcpt.mailbox, folder, stamped)

    def _submission_hop(self, content: bytes, accepted: Accepted, queue_id: str) -> bytes:
        headers = _headers(content).lower()
        extra = b""
        # Microsoft adds Date and Message-ID when the client left them out; signed below.
        if b"\r\ndate:" not in b"\r\n" + headers:
            extra += f"Date: {_now()}\r\n".encode()
        if b"\r\nmessage-id:" not in b"\r\n" + headers:
            extra += f"Message-ID: {email.utils.make_msgid(domain=self.domain)}\r\n".encode()
        received = (
            f"Received: from [{accepted.peer_ip}] by {self.hostname} (relayprobe embedded) "
            f"with ESMTPSA id {queue_id}; {_now()}\r\n"
        ).encode()
        assert self._sign is not None
        return self._sign(received + extra + content)

    async def _deliver(self, mailbox: str, folder: str, message: bytes) -> None:
        uid = await self.store.deliver(mailbox, folder, message)
        self.deliveries += 1
        log.info("delivered to %s/%s uid=%d", mailbox, folder, uid)

    async def _deliver_later(self, delay: float, mailbox: str, folder: str, message: bytes) -> None:
        await asyncio.sleep(delay)
        await self._deliver(mailbox, folder, message)


def _now() -> str:
    return email.utils.format_datetime(datetime.now(UTC))  # "+0000", not formatdate()'s "-0000"


def _headers(content: bytes) -> bytes:
    match = _HEADER_END.search(content)
    return content[: match.start() + 2] if match else content
