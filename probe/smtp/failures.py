"""Turn connection-level SMTP errors into failures that name the stage, host:port and cause."""

from __future__ import annotations

import socket
import ssl

import aiosmtplib

from probe.failure import ProbeFailure, local_failure
from probe.result import Reason, Stage


def connect_failure(where: str, host: str, exc: BaseException) -> ProbeFailure:
    """A failed connect: DNS, refused, a TLS handshake (implicit TLS) or anything else."""
    local = local_failure(Stage.CONNECT, exc, f"connect {where}")
    if local is not None:
        return local
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLError):
        return tls_failure(where, cause)
    if isinstance(cause, socket.gaierror):
        return ProbeFailure.at(
            Stage.CONNECT,
            Reason.DNS_ERROR,
            where,
            f"cannot resolve {host!r} ({cause})",
            remedy="check smtp.host and this host's DNS resolver; tried again at the next run",
        )
    if isinstance(cause, ConnectionRefusedError):
        return ProbeFailure.at(
            Stage.CONNECT,
            Reason.CONNECT_REFUSED,
            where,
            "connection refused",
            remedy="check that the relay listens on smtp.host and smtp.port and that no "
            "firewall refuses the connection",
        )
    return ProbeFailure.at(
        Stage.CONNECT,
        Reason.CONNECT_FAILED,
        where,
        f"cannot connect ({cause})",
        remedy="check the network path to the relay (routing, firewall, proxy); tried again "
        "at the next run",
    )


def tls_failure(where: str, exc: BaseException) -> ProbeFailure:
    """A failed TLS handshake, with the likely fix."""
    hint = (
        "set smtp.ca_file to the CA that issued the relay's certificate, or fix the certificate"
        if isinstance(exc, ssl.SSLCertVerificationError)
        else "check that the relay speaks TLS 1.2 or newer on this port"
    )
    return ProbeFailure.at(
        Stage.TLS, Reason.TLS_FAILED, where, f"TLS handshake failed ({exc})", remedy=hint
    )


def command_of(exc: aiosmtplib.SMTPResponseException) -> str:
    """Which transaction command a refusal answered."""
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "MAIL FROM"
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return "RCPT TO"
    return "DATA"


def queue_id(text: str) -> str | None:
    """The relay's queue id from its reply to DATA, when it says one."""
    # Postfix: "2.0.0 Ok: queued as 4Xyz"; Microsoft: "2.6.0 <id> [InternalId=...] Queued mail".
    words = text.split()
    if "as" in words and words.index("as") + 1 < len(words):
        return words[words.index("as") + 1]
    return None
