"""Send one probe mail through a relay with aiosmtplib, timing each phase and classifying failures."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiosmtplib

from probe import tls
from probe.failure import ProbeFailure, local_failure
from probe.m365.tokens import TokenProvider, token_refused
from probe.result import SMTP_PHASES, Reason, SmtpReceipt, Stage
from probe.smtp.failures import command_of, connect_failure, queue_id, tls_failure
from probe.smtp.replies import classify_auth_reply, classify_submit_reply

if TYPE_CHECKING:
    from probe.config import Smtp

log = logging.getLogger("relayprobe.smtp")

#: Returns a fresh OAuth access token (XOAUTH2); awaited right before AUTH.


@dataclass
class SmtpOutcome:
    """A finished submission: the receipt and the seconds each phase took."""

    receipt: SmtpReceipt
    phases: dict[str, float] = field(default_factory=dict)  # connect, tls, auth, submit
    accepted_at: float = 0.0  # time.monotonic() when the relay answered DATA with 2xx


class _Session:
    """One SMTP conversation; keeps the receipt current so failures can report the last reply."""

    def __init__(self, cfg: Smtp, token_provider: TokenProvider | None) -> None:
        self.cfg = cfg
        self.where = f"{cfg.host}:{cfg.port}"
        self.token_provider = token_provider
        self.receipt = SmtpReceipt(host=cfg.host, port=cfg.port)
        self.phases: dict[str, float] = {}
        self.ctx = tls.client_context(
            ca_file=cfg.ca_file,
            client_cert_file=cfg.client_cert_file,
            client_key_file=cfg.client_key_file,
        )
        self.client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.security == "tls",
            start_tls=False,  # STARTTLS is done by hand below: required, timed, never skipped
            tls_context=self.ctx,
            timeout=cfg.timeout,
            local_hostname=cfg.helo,
        )

    def fail(self, stage: Stage, reason: Reason, what: str, **details: Any) -> ProbeFailure:
        return ProbeFailure.at(stage, reason, self.where, what, **details)

    def _note_reply(self, code: int, text: str) -> None:
        self.receipt.reply_code = code
        self.receipt.reply = " ".join(text.split())
        log.info("%s S: %s %s", self.where, code, self.receipt.reply)

    def _say(self, command: str) -> None:
        # The transcript under --verbose; credentials and tokens are never part of ``command``.
        log.info("%s C: %s", self.where, command)

    def _note_tls(self) -> None:
        ssl_object = self.client.get_transport_info("ssl_object")
        version, cipher, not_after = tls.describe(ssl_object)
        self.receipt.tls_version, self.receipt.cipher = version, cipher
        self.receipt.cert_not_after = not_after

    async def connect(self) -> None:
        start = time.monotonic()
        try:
            reply = await self.client.connect()
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            raise self.fail(
                Stage.CONNECT,
                Reason.CONNECT_TIMEOUT,
                f"no answer within {self.cfg.timeout:g} s ({exc})",
                remedy="check smtp.host, smtp.port and any firewall in between; tried again at "
                "the next run",
            ) from None
        except aiosmtplib.SMTPConnectResponseError as exc:
            self._note_reply(exc.code, exc.message)
            raise self.fail(
                Stage.CONNECT,
                Reason.SMTP_TEMPORARY_FAILURE if exc.code < 500 else Reason.SMTP_REJECTED,
                f"the server refused the session: {exc.code} {exc.message}",
                reply_code=exc.code,
                reply=exc.message,
            ) from None
        except (aiosmtplib.SMTPConnectError, OSError) as exc:
            raise connect_failure(self.where, self.cfg.host, exc) from None
        self._note_reply(reply.code, reply.message)
        self.phases["connect"] = time.monotonic() - start
        if self.cfg.security == "tls":
            self._note_tls()

    async def ehlo(self) -> None:
        self._say("EHLO")
        try:
            reply = await self.client.ehlo()
        except aiosmtplib.SMTPResponseException as exc:
            self._note_reply(exc.code, exc.message)
            raise self.fail(
                Stage.CONNECT,
                Reason.SMTP_PROTOCOL_ERROR,
                f"EHLO refused: {exc.code} {exc.message}",
                reply_code=exc.code,
                reply=exc.message,
            ) from None
        self._note_reply(reply.code, reply.message)

    async def starttls(self) -> None:
        if not self.client.supports_extension("starttls"):
            raise self.fail(
                Stage.TLS,
                Reason.STARTTLS_UNAVAILABLE,
                "the server does not offer STARTTLS; nothing was sent (security: starttls never "
                "falls back to plain text)",
                remedy="use the relay's submission port (587 on Microsoft 365) or fix its TLS "
                "setup",
            )
        start = time.monotonic()
        self._say("STARTTLS")
        try:
            reply = await self.client.starttls(tls_context=self.ctx)
        except aiosmtplib.SMTPResponseException as exc:
            self._note_reply(exc.code, exc.message)
            raise self.fail(
                Stage.TLS,
                Reason.TLS_FAILED,
                f"STARTTLS refused: {exc.code} {exc.message}",
                remedy="the relay refused to start TLS: check its TLS configuration and logs",
                reply_code=exc.code,
                reply=exc.message,
            ) from None
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
            raise tls_failure(self.where, cause) from None
        self._note_reply(reply.code, reply.message)
        self.phases["tls"] = time.monotonic() - start
        self._note_tls()
        log.info("%s TLS: %s %s", self.where, self.receipt.tls_version, self.receipt.cipher)
        await self.ehlo()  # RFC 3207: forget the pre-TLS capabilities

    async def auth(self) -> None:
        auth = self.cfg.auth
        if auth is None:
            return
        if not self.client.supports_extension("auth"):
            raise self.fail(
                Stage.AUTH,
                Reason.AUTH_UNAVAILABLE,
                "the server offers no AUTH on this connection; check the port and that SMTP "
                "AUTH is enabled on the relay",
            )
        offered = {m.upper() for m in self.client.server_auth_methods}
        start = time.monotonic()
        try:
            if auth.method == "password":
                secret = auth.password.get() if auth.password else ""
                mechanism = "PLAIN" if "PLAIN" in offered else "LOGIN"
                self._say(f"AUTH {mechanism} <credentials of {auth.username} redacted>")
                if mechanism == "PLAIN":
                    reply = await self.client.auth_plain(auth.username, secret)
                else:
                    reply = await self.client.auth_login(auth.username, secret)
            else:
                reply = await self._xoauth2(auth.username)
        except aiosmtplib.SMTPAuthenticationError as exc:
            self._note_reply(exc.code, exc.message)
            cls = classify_auth_reply(exc.code, exc.message)
            raise self.fail(
                Stage.AUTH,
                cls.reason,
                f"AUTH as {auth.username} refused: {exc.code} {' '.join(exc.message.split())}",
                remedy=cls.remedy,
                reply_code=exc.code,
                reply=exc.message,
            ) from None
        self._note_reply(reply.code, reply.message)
        self.phases["auth"] = time.monotonic() - start

    async def _xoauth2(self, username: str) -> aiosmtplib.SMTPResponse:
        """AUTH XOAUTH2; a refused token that came from a cache is dropped and a fresh one
        tried once on the same connection (a rotated key or new consent is not a config error)."""
        token = await self._token()
        self._say(f"AUTH XOAUTH2 <token for {username} redacted>")
        try:
            return await self.client.auth_xoauth2(username, token)
        except aiosmtplib.SMTPAuthenticationError as exc:
            refused = classify_auth_reply(exc.code, exc.message).reason is Reason.AUTH_FAILED
            if not (refused and token_refused(self.token_provider, token)):
                raise
            self._say(f"{exc.code} refused a cached token: AUTH XOAUTH2 with a fresh one")
            token = await self._token()
            return await self.client.auth_xoauth2(username, token)

    async def _token(self) -> str:
        auth = self.cfg.auth
        assert auth is not None
        if auth.method == "token" and auth.token is not None:
            return auth.token.get()
        if self.token_provider is None:
            raise self.fail(
                Stage.AUTH,
                Reason.OAUTH_TOKEN_FAILED,
                "no OAuth token source for this target; configure smtp.auth for oauth2",
            )
        try:
            return await self.token_provider()
        except ProbeFailure as failure:
            raise failure.on_side("SMTP", Stage.AUTH) from None

    async def submit(self, mail_from: str, rcpt_to: str, message: bytes) -> float:
        start = time.monotonic()
        try:
            self._say(f"MAIL FROM:<{mail_from}>")
            reply = await self.client.mail(mail_from)
            self._note_reply(reply.code, reply.message)
            self._say(f"RCPT TO:<{rcpt_to}>")
            reply = await self.client.rcpt(rcpt_to)
            self._note_reply(reply.code, reply.message)
            self._say(f"DATA <{len(message)} bytes>")
            reply = await self.client.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            self._note_reply(exc.code, exc.message)
            cls = classify_submit_reply(exc.code, exc.message)
            command = command_of(exc)
            raise self.fail(
                Stage.SUBMIT,
                cls.reason,
                f"{command} refused: {exc.code} {' '.join(exc.message.split())}",
                remedy=cls.remedy,
                reply_code=exc.code,
                reply=exc.message,
            ) from None
        accepted_at = time.monotonic()
        self._note_reply(reply.code, reply.message)
        self.receipt.queue_id = queue_id(reply.message)
        self.phases["submit"] = accepted_at - start
        return accepted_at


async def send_probe(
    cfg: Smtp,
    *,
    mail_from: str,
    rcpt_to: str,
    message: bytes,
    token_provider: TokenProvider | None = None,
) -> SmtpOutcome:
    """Submit ``message`` through the relay; raise ProbeFailure naming the stage that failed.

    ``security: starttls`` requires STARTTLS before anything else is sent; AUTH is never
    attempted on a connection that is not encrypted.
    """
    try:
        session = _Session(cfg, token_provider)
    except (OSError, ssl.SSLError) as exc:
        local = local_failure(
            Stage.TLS, exc, "loading the TLS files", file="smtp.ca_file or smtp.client_cert_file"
        )
        raise local or ProbeFailure.at(
            Stage.TLS,
            Reason.TLS_FAILED,
            f"{cfg.host}:{cfg.port}",
            f"cannot load smtp.ca_file or the client certificate ({exc}); nothing was sent",
            remedy="smtp.ca_file and smtp.client_cert_file must be PEM files (a CA bundle; the "
            "certificate with its private key)",
        ) from None
    try:
        await session.connect()
        await session.ehlo()
        if cfg.security == "starttls":
            await session.starttls()
        await session.auth()
        accepted_at = await session.submit(mail_from, rcpt_to, message)
        return SmtpOutcome(receipt=session.receipt, phases=session.phases, accepted_at=accepted_at)
    except ProbeFailure as failure:
        raise _with(session, failure) from None
    except aiosmtplib.SMTPTimeoutError as exc:
        raise _with(
            session,
            session.fail(
                _stage_now(session),
                Reason.SMTP_TIMEOUT,
                str(exc),
                remedy="the relay stopped answering mid-session; check its load and logs; "
                "tried again at the next run",
            ),
        ) from None
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPException, OSError) as exc:
        local = local_failure(_stage_now(session), exc, f"SMTP session with {session.where}")
        raise _with(
            session,
            local
            or session.fail(
                _stage_now(session),
                Reason.SMTP_PROTOCOL_ERROR,
                f"the conversation broke off ({exc}); last reply: "
                f"{session.receipt.reply_code} {session.receipt.reply}",
                remedy="the relay (or a middlebox between) closed or broke the session; check "
                "its logs; tried again at the next run",
            ),
        ) from None
    finally:
        await _close(session.client)


def _stage_now(session: _Session) -> Stage:
    # A failure belongs to the stage after the last phase that completed (phases run in order).
    after = {"connect": Stage.TLS, "tls": Stage.AUTH, "auth": Stage.SUBMIT, "submit": Stage.SUBMIT}
    done = [phase for phase in SMTP_PHASES if phase in session.phases]
    return after[done[-1]] if done else Stage.CONNECT


def _with(session: _Session, failure: ProbeFailure) -> ProbeFailure:
    failure.receipt = session.receipt
    failure.phases = session.phases
    return failure


async def _close(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await asyncio.wait_for(client.quit(), timeout=5)
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()
