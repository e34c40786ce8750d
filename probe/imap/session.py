"""Open an authenticated IMAP session (imapclient, blocking) and classify what goes wrong."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import logging
import re
import socket
import ssl
from typing import TYPE_CHECKING

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from probe import tls
from probe.failure import ProbeFailure, local_failure
from probe.m365.codes import IMAP_OAUTH_REMEDY
from probe.result import Reason, Stage

if TYPE_CHECKING:
    from probe.config import Mailbox


log = logging.getLogger("relayprobe.imap")


def where(cfg: Mailbox) -> str:
    return f"imap {cfg.host}:{cfg.port}"


def connect(cfg: Mailbox, *, token: str | None = None) -> imapclient.IMAPClient:
    """Connect, secure (implicit TLS or required STARTTLS) and log in; raise ProbeFailure.

    ``token`` is the OAuth access token for ``oauth2``/``token`` methods (XOAUTH2).
    """
    try:
        ctx = tls.client_context(ca_file=cfg.ca_file)
    except (OSError, ssl.SSLError) as exc:
        local = local_failure(Stage.DELIVER, exc, "loading mailbox.ca_file", file="mailbox.ca_file")
        raise local or ProbeFailure.at(
            Stage.DELIVER,
            Reason.TLS_FAILED,
            where(cfg),
            f"cannot load mailbox.ca_file ({exc})",
            remedy="mailbox.ca_file must be a PEM CA bundle",
        ) from None
    try:
        client = imapclient.IMAPClient(
            cfg.host,
            port=cfg.port,
            ssl=cfg.security == "tls",
            ssl_context=ctx,
            timeout=cfg.timeout,
        )
    except socket.gaierror as exc:
        raise ProbeFailure.at(
            Stage.DELIVER,
            Reason.DNS_ERROR,
            where(cfg),
            f"cannot resolve {cfg.host!r} ({exc})",
            remedy="check mailbox.host and this host's DNS resolver; tried again at the next run",
        ) from None
    except ConnectionRefusedError:
        raise ProbeFailure.at(
            Stage.DELIVER,
            Reason.IMAP_FAILED,
            where(cfg),
            "connection refused",
            remedy="check that the IMAP server listens on mailbox.host and mailbox.port; "
            "tried again at the next run",
        ) from None
    except ssl.SSLError as exc:
        raise ProbeFailure.at(
            Stage.DELIVER,
            Reason.TLS_FAILED,
            where(cfg),
            f"TLS handshake failed ({exc})",
            remedy="set mailbox.ca_file to the CA that issued the IMAP server's certificate, or "
            "fix the certificate",
        ) from None
    except (OSError, IMAPClientError) as exc:
        local = local_failure(Stage.DELIVER, exc, f"connect {where(cfg)}")
        raise local or ProbeFailure.at(
            Stage.DELIVER,
            Reason.IMAP_FAILED,
            where(cfg),
            f"cannot connect ({server_text(exc)})",
            remedy="check the network path to the IMAP server; tried again at the next run",
        ) from None
    try:
        if cfg.security == "starttls":
            if not client.has_capability("STARTTLS"):
                raise ProbeFailure.at(
                    Stage.DELIVER,
                    Reason.STARTTLS_UNAVAILABLE,
                    where(cfg),
                    "the server does not offer STARTTLS; credentials were not sent",
                    remedy="use the server's IMAPS port (993, mailbox.security tls) or fix its "
                    "TLS setup",
                )
            try:
                client.starttls(ctx)
            except ssl.SSLError as exc:
                raise ProbeFailure.at(
                    Stage.DELIVER,
                    Reason.TLS_FAILED,
                    where(cfg),
                    f"STARTTLS handshake failed ({exc})",
                    remedy="set mailbox.ca_file to the CA that issued the IMAP server's "
                    "certificate, or fix the certificate",
                ) from None
        _login(cfg, client, token)
        log.info(
            "%s: logged in as %s (%s, %s)",
            where(cfg),
            cfg.auth.username,
            "XOAUTH2" if cfg.auth.method != "password" else "LOGIN",
            client.socket().version() if hasattr(client.socket(), "version") else "no TLS",
        )
    except BaseException:
        _quietly_close(client)
        raise
    return client


def _login(cfg: Mailbox, client: imapclient.IMAPClient, token: str | None) -> None:
    auth = cfg.auth
    try:
        if auth.method == "password":
            client.login(auth.username, auth.password.get() if auth.password else "")
        else:
            client.oauth2_login(auth.username, token or "")
    except LoginError as exc:
        text = server_text(exc)
        if any(code in text.upper() for code in ("[UNAVAILABLE]", "[LIMIT]", "[INUSE]")):
            # RFC 5530: the server could not check the credentials now (its backend is down);
            # nothing is wrong with the configuration (docs/architecture.md, "Reasons").
            raise ProbeFailure.at(
                Stage.DELIVER,
                Reason.IMAP_FAILED,
                where(cfg),
                f"login as {auth.username} failed temporarily: {text}",
                remedy="the IMAP server refused the login for now, not for good ([UNAVAILABLE]: it "
                "could not check the credentials; [LIMIT]/[INUSE]: too many connections to the "
                "mailbox): tried again at the next run without backing off",
            ) from None
        failure = ProbeFailure.at(
            Stage.DELIVER,
            Reason.IMAP_AUTH_FAILED,
            where(cfg),
            f"login as {auth.username} refused: {text}",
        )
        if auth.method == "password":
            failure.remedy = (
                "check mailbox.auth; Microsoft 365 IMAP accepts only OAuth (method oauth2) "
                "since basic authentication was switched off in 2022"
            )
        else:
            failure.remedy = IMAP_OAUTH_REMEDY
        raise failure from None
    except (OSError, IMAPClientError) as exc:
        raise ProbeFailure.at(
            Stage.DELIVER,
            Reason.IMAP_FAILED,
            where(cfg),
            f"login as {auth.username} failed ({server_text(exc)})",
            remedy="the connection to the IMAP server broke during login; tried again at the "
            "next run",
        ) from None


def cert_not_after(client: imapclient.IMAPClient) -> dt.datetime | None:
    """notAfter of the certificate the IMAP server presented on ``client``'s connection (None
    without TLS), as SmtpReceipt.cert_not_after is on the relay's side."""
    sock = client.socket()
    return tls.describe(sock)[2] if isinstance(sock, ssl.SSLSocket) else None


def server_text(exc: BaseException) -> str:
    """What the server said, as text for people: no ``b'…'`` reprs, one line."""
    text = str(exc)
    first = exc.args[0] if exc.args else None
    if isinstance(first, bytes):
        text = first.decode("utf-8", "replace")
    else:
        # imapclient wraps imaplib's bytes arguments with str(): "b'[AUTHENTICATIONFAILED] …'".
        text = _BYTES_REPR.sub(lambda m: _unrepr(m.group(0)), text)
    return " ".join(text.split()) or "no reason given"


_BYTES_REPR = re.compile(r"b'(?:[^'\\]|\\.)*'" + r'|b"(?:[^"\\]|\\.)*"')


def _unrepr(literal: str) -> str:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return literal
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else literal


def select(cfg: Mailbox, client: imapclient.IMAPClient, folder: str) -> dict[bytes, object]:
    """Select ``folder`` read-write; a missing folder is ``folder_missing`` naming the folder."""
    try:
        return client.select_folder(folder)
    except IMAPClientError as exc:
        raise ProbeFailure.at(
            Stage.DELIVER,
            Reason.FOLDER_MISSING,
            where(cfg),
            f'cannot select folder "{folder}" ({server_text(exc)}); check mailbox.folder and '
            'junk_folders (Exchange Online\'s names are localised, e.g. "Junk Email")',
        ) from None


def _quietly_close(client: imapclient.IMAPClient) -> None:
    with contextlib.suppress(OSError, IMAPClientError):
        client.shutdown()
