"""Relay-mode presets: defaults and contradictions for submission, direct send and connector targets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SUBMISSION_HOST = "smtp.office365.com"
_MX_SUFFIX = ".mail.protection.outlook.com"


def _domain(address: Any) -> str | None:
    if isinstance(address, str) and "@" in address:
        return address.rsplit("@", 1)[1].lower()
    return None


def _submission(t: dict[str, Any], smtp: dict[str, Any], p: str) -> list[str]:
    smtp.setdefault("host", SUBMISSION_HOST)
    smtp.setdefault("security", "starttls")
    errors = []
    m365 = str(smtp.get("host", "")).lower().rstrip(".") == SUBMISSION_HOST
    if smtp.get("security") == "tls" and m365:
        errors.append(
            f'{p}.smtp.security: "tls" (implicit TLS, port 465) is not supported by '
            f"{SUBMISSION_HOST}; use starttls on port 587"
        )
    if smtp.get("security") == "none":
        errors.append(
            f'{p}.smtp.security: "none" is not allowed with mode submission: AUTH '
            "needs an encrypted connection; use starttls"
        )
    if smtp.get("port") == 465 and m365:
        errors.append(f"{p}.smtp.port: 465 is not supported by {SUBMISSION_HOST}; use 587")
    if not isinstance(smtp.get("auth"), Mapping):
        errors.append(
            f"{p}.smtp.auth: required by mode submission (OAuth with method oauth2, or "
            "method password); without AUTH use mode direct_send or connector"
        )
    return errors


def _mx_host(smtp: dict[str, Any], p: str, mode: str) -> list[str]:
    if smtp.get("host") is None:
        return [
            f"{p}.smtp.host: required by mode {mode}: the tenant's MX host, e.g. "
            "contoso-com.mail.protection.outlook.com"
        ]
    if str(smtp["host"]).lower().rstrip(".") == SUBMISSION_HOST:
        return [
            f"{p}.smtp.host: {SUBMISSION_HOST} is the submission endpoint; mode {mode} "
            "sends to the tenant's MX host (<domain>.mail.protection.outlook.com)"
        ]
    return []


def _direct_send(t: dict[str, Any], smtp: dict[str, Any], p: str, warnings: list[str]) -> list[str]:
    errors = _mx_host(smtp, p, "direct_send")
    smtp.setdefault("security", "starttls")
    if "auth" in smtp:
        errors.append(
            f"{p}.smtp.auth: not allowed with mode direct_send: direct send is "
            "anonymous (remove auth, or use mode submission on smtp.office365.com)"
        )
    if smtp.get("client_cert_file") is not None:
        errors.append(
            f"{p}.smtp.client_cert_file: not used by mode direct_send; a certificate "
            "identifies a connector: use mode connector"
        )
    host, rcpt = str(smtp.get("host") or "").lower(), _domain(t.get("rcpt_to"))
    if host.endswith(_MX_SUFFIX) and rcpt is not None:
        # contoso-com.mail.protection.outlook.com serves contoso.com ("." written as "-").
        label = host[: -len(_MX_SUFFIX)]
        if re.sub(r"[.-]", "-", rcpt) != label:
            warnings.append(
                f"{p}.rcpt_to: direct send delivers only to mailboxes of the tenant "
                f"behind {host}; is {rcpt} one of its accepted domains?"
            )
    return errors


def _connector(t: dict[str, Any], smtp: dict[str, Any], p: str) -> list[str]:
    errors = _mx_host(smtp, p, "connector")
    smtp.setdefault("security", "starttls")
    if smtp.get("security") == "none":
        errors.append(
            f'{p}.smtp.security: "none" is not allowed with mode connector: a '
            "certificate-based connector requires TLS; use starttls"
        )
    if smtp.get("client_cert_file") is None:
        errors.append(
            f"{p}.smtp.client_cert_file: required by mode connector: the certificate "
            "whose CN/SAN is the connector's TlsSenderCertificateName"
        )
    if "auth" in smtp:
        errors.append(
            f"{p}.smtp.auth: not used by mode connector: the relay identifies you by "
            "the client certificate (or static IP), not by AUTH"
        )
    return errors


def apply_preset(target: Any, where: str, errors: list[str], warnings: list[str]) -> Any:
    """Fill the defaults of an explicitly set ``mode`` and report contradictions (raw YAML data).

    Only a ``mode`` written in the file applies a preset, so targets without one (test relays)
    keep plain validation. Port defaults come from ``security`` as usual, except direct send and
    connector, which use 25 (the tenant MX). Problems are "path: message" lines.
    """
    if not isinstance(target, Mapping) or not isinstance(target.get("smtp"), Mapping):
        return target
    mode = target.get("mode")
    if mode not in ("submission", "direct_send", "connector"):
        return target  # absent or invalid: pydantic reports an invalid value
    t, smtp = dict(target), dict(target["smtp"])
    if mode == "submission":
        errors += _submission(t, smtp, where)
    elif mode == "direct_send":
        smtp.setdefault("port", 25)
        errors += _direct_send(t, smtp, where, warnings)
    else:
        smtp.setdefault("port", 25)
        errors += _connector(t, smtp, where)
    t["smtp"] = smtp
    return t
