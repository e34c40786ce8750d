"""The two SMTP listeners (aiosmtpd): authenticated submission like smtp.office365.com:587, and MX."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# aiosmtpd 1.4 itself sets the deprecated Session.login_data on every successful AUTH and logs a
# warning each time; this module reads session.auth_data, so that line is noise in demo output.
logging.getLogger("mail.log").addFilter(
    lambda record: "login_data is deprecated" not in record.getMessage()
)

# Fault switches by recipient extension (user+EXT@domain), applied at RCPT on both listeners.
# Texts follow what Microsoft 365 answers in the same situation.
FAULT_REPLIES = {
    "defer": "451 4.3.2 Temporary server error. Please try again later (+defer)",
    "throttle": "451 4.7.500 Server busy. Please try again later (+throttle)",
    "reject": "550 5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
}
MAX_DELAY_SECONDS = 3600
_DELAY = re.compile(r"delay(\d{1,4})")

AUTH_FAILED = "535 5.7.3 Authentication unsuccessful"
AUTH_REFUSED = "535 5.7.3 Authentication unsuccessful (authentication refused by switch)"


def split_address(address: str) -> tuple[str, str | None]:
    """``inbox+delay2@demo.test`` -> (``inbox@demo.test``, ``delay2``); lower-cased."""
    local, _, domain = address.lower().rpartition("@")
    base, plus, extension = local.partition("+")
    return f"{base}@{domain}", (extension if plus else None)


@dataclass
class Recipient:
    """An accepted recipient: the mailbox it lands in and the switches it carries."""

    address: str  # as given at RCPT
    mailbox: str  # base address (extension removed)
    delay: float = 0.0
    junk: bool = False


@dataclass
class Accepted:
    """One accepted transaction, handed to the receiving side."""

    via: str  # "submission" or "mx"
    mail_from: str
    recipients: list[Recipient]
    content: bytes
    helo: str
    peer_ip: str
    tls: bool
    login: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


DeliverFunc = Callable[[Accepted], Awaitable[str]]


class _Handler:
    """Shared RCPT/DATA logic; ``domain`` is the only accepted recipient domain."""

    via = ""

    def __init__(
        self, domain: str, has_mailbox: Callable[[str], bool], deliver: DeliverFunc
    ) -> None:
        self.domain = domain
        self.has_mailbox = has_mailbox
        self.deliver = deliver

    async def handle_RCPT(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        mailbox, extension = split_address(address)
        if not mailbox.endswith("@" + self.domain):
            return "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
        if extension in FAULT_REPLIES:
            return FAULT_REPLIES[extension]
        if not self.has_mailbox(mailbox):
            return FAULT_REPLIES["reject"]
        recipient = Recipient(address, mailbox, junk=extension == "junk")
        if extension and (match := _DELAY.fullmatch(extension)):
            recipient.delay = float(min(int(match.group(1)), MAX_DELAY_SECONDS))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        # The envelope is new for every transaction, so RSET/MAIL drop these with it.
        envelope.__dict__.setdefault("recipients", []).append(recipient)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        recipients = envelope.__dict__.get("recipients", [])
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        content = envelope.original_content or b""
        accepted = Accepted(
            via=self.via,
            mail_from=envelope.mail_from or "",
            recipients=recipients,
            content=content,
            helo=session.host_name or "",
            peer_ip=peer,
            tls=session.ssl is not None,
            login=_login_of(session),
        )
        return await self.deliver(accepted)


def _login_of(session: Session) -> str | None:
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", "replace")
    return None


class SubmissionHandler(_Handler):
    """STARTTLS required, AUTH after TLS only, MAIL FROM must be the login (send-as check)."""

    via = "submission"

    def __init__(
        self,
        domain: str,
        has_mailbox: Callable[[str], bool],
        deliver: DeliverFunc,
        passwords: dict[str, str],
    ) -> None:
        super().__init__(domain, has_mailbox, deliver)
        self.passwords = passwords  # login -> password; read at each AUTH, so changes apply
        self.auth_refused = False

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth_refused:
            return AuthResult(success=False, handled=False, message=AUTH_REFUSED)
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False, message=AUTH_FAILED)
        login = data.login.decode("utf-8", "replace").lower()
        expected = self.passwords.get(login, "")
        given = data.password.decode("utf-8", "replace")
        # compare_digest even for unknown logins, so timing does not reveal which logins exist
        if secrets.compare_digest(given.encode(), expected.encode()) and expected:
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False, message=AUTH_FAILED)

    async def handle_MAIL(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        login = (_login_of(session) or "").lower()
        if address.lower() != login:
            return f"553 5.7.1 Sender address rejected: not owned by user {login} (SendAsDenied)"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"


class MxHandler(_Handler):
    """The tenant's MX / direct-send endpoint: no AUTH, STARTTLS optional."""

    via = "mx"

    async def handle_EHLO(  # aiosmtpd hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd always lists AUTH after STARTTLS; an MX does not offer it.
        return [r for r in responses if not r.startswith("250-AUTH")]

    async def handle_AUTH(  # aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> str:
        return "503 5.5.1 AUTH not available on this endpoint"


def submission_server(handler: SubmissionHandler, tls_context: Any, hostname: str) -> SMTP:
    return SMTP(
        handler,
        hostname=hostname,
        ident="Microsoft ESMTP MAIL Service (relayprobe embedded)",
        tls_context=tls_context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=handler.authenticator,
        timeout=60,
    )


def mx_server(handler: MxHandler, tls_context: Any, hostname: str) -> SMTP:
    return SMTP(
        handler,
        hostname=hostname,
        ident="Microsoft ESMTP MAIL Service (relayprobe embedded)",
        tls_context=tls_context,
        require_starttls=False,
        auth_require_tls=True,
        timeout=60,
    )
