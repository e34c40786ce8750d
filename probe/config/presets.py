"""Relay-mode presets: defaults and contradictions for submission, direct send, connector, HVE, ACS."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from probe.config.clouds import CLOUDS, MX_SUFFIXES, SUBMISSION_HOSTS, Cloud, cloud_of
from probe.config.secrets import Secret

MODES = ("submission", "direct_send", "connector", "hve", "acs")
#: The global cloud's submission host (other clouds: probe/config/clouds.py).
SUBMISSION_HOST = CLOUDS["global"].submission_host
_HVE_HOSTS = frozenset(c.hve_host for c in CLOUDS.values())
_ACS_HOSTS = frozenset(c.acs_host for c in CLOUDS.values())
#: What each kind of Microsoft endpoint is called in messages, and the mode that sends there.
_KINDS = {
    "submission": ("the SMTP AUTH submission endpoint", "submission"),
    "hve": ("the High Volume Email endpoint", "hve"),
    "acs": ("the Azure Communication Services Email endpoint", "acs"),
    "mx": ("a tenant MX host", "direct_send or connector"),
}


def _domain(address: Any) -> str | None:
    if isinstance(address, str) and "@" in address:
        return address.rsplit("@", 1)[1].lower()
    return None


def _host(smtp: Mapping[str, Any]) -> str:
    return str(smtp.get("host") or "").lower().rstrip(".")


def _kind(host: str) -> str | None:
    """Which Microsoft endpoint ``host`` is (any cloud), or None for any other host."""
    if host in SUBMISSION_HOSTS:
        return "submission"
    if host in _HVE_HOSTS:
        return "hve"
    if host in _ACS_HOSTS:
        return "acs"
    return "mx" if any(host.endswith("." + s) for s in MX_SUFFIXES) else None


def _wrong_endpoint(smtp: Mapping[str, Any], p: str, mode: str, wants: str) -> list[str]:
    """A host that is another mode's Microsoft endpoint (an explicit host of any other kind wins)."""
    host, own = _host(smtp), "mx" if mode in ("direct_send", "connector") else mode
    kind = _kind(host)
    if kind is None or kind == own:
        return []
    what, use = _KINDS[kind]
    return [f"{p}.smtp.host: {host} is {what}; mode {mode} sends to {wants} (or use mode {use})"]


def _auth_method(smtp: Mapping[str, Any]) -> Any:
    auth = smtp.get("auth")
    return auth.get("method") if isinstance(auth, Mapping) else None


def _tls_on_587(smtp: dict[str, Any], p: str, mode: str, hosts: frozenset[str]) -> list[str]:
    """STARTTLS on 587 with AUTH: what submission, HVE and ACS all require."""
    smtp.setdefault("security", "starttls")
    errors, host = [], _host(smtp)
    if smtp.get("security") == "tls" and host in hosts:
        errors.append(
            f'{p}.smtp.security: "tls" (implicit TLS, port 465) is not supported by {host}; '
            "use starttls on port 587"
        )
    if smtp.get("security") == "none":
        errors.append(
            f'{p}.smtp.security: "none" is not allowed with mode {mode}: AUTH needs an '
            "encrypted connection; use starttls"
        )
    if smtp.get("port") == 465 and host in hosts:
        errors.append(f"{p}.smtp.port: 465 is not supported by {host}; use 587")
    return errors


def _no_client_cert(smtp: Mapping[str, Any], p: str, mode: str) -> list[str]:
    if smtp.get("client_cert_file") is None:
        return []
    return [
        f"{p}.smtp.client_cert_file: not used by mode {mode}; a certificate identifies a "
        "connector: use mode connector"
    ]


def _submission(t: dict[str, Any], smtp: dict[str, Any], p: str, cloud: Cloud) -> list[str]:
    smtp.setdefault("host", cloud.submission_host)
    errors = _tls_on_587(smtp, p, "submission", SUBMISSION_HOSTS)
    errors += _wrong_endpoint(smtp, p, "submission", f"{cloud.submission_host}:587")
    if not isinstance(smtp.get("auth"), Mapping):
        errors.append(
            f"{p}.smtp.auth: required by mode submission (OAuth with method oauth2, or "
            "method password); without AUTH use mode direct_send or connector"
        )
    return errors


def _hve(
    t: dict[str, Any], smtp: dict[str, Any], p: str, cloud: Cloud, warnings: list[str]
) -> list[str]:
    smtp.setdefault("host", cloud.hve_host)
    errors = _tls_on_587(smtp, p, "hve", _HVE_HOSTS)
    errors += _wrong_endpoint(smtp, p, "hve", f"{cloud.hve_host}:587")
    errors += _no_client_cert(smtp, p, "hve")
    if not isinstance(smtp.get("auth"), Mapping):
        errors.append(
            f"{p}.smtp.auth: required by mode hve: the HVE account's password (method "
            "password) or XOAUTH2 through an Entra app with Mail.Send, added to the account "
            "with Add-HVEAppAccess (method oauth2)"
        )
    # HVE delivers only inside the tenant (docs/m365.md#high-volume-email): a recipient in a
    # domain that is neither the sender's nor the tenant's is probably going to bounce.
    rcpt, own = _domain(t.get("rcpt_to")), {_domain(t.get("mail_from"))}
    auth = smtp.get("auth")
    tenant = auth.get("tenant_id") if isinstance(auth, Mapping) else None
    if isinstance(tenant, str) and "." in tenant:
        own.add(tenant.lower())
    if rcpt is not None and rcpt not in own:
        warnings.append(
            f"{p}.rcpt_to: High Volume Email delivers only to recipients inside the tenant; "
            f"is {rcpt} one of its accepted domains?"
        )
    return errors


def _acs(t: dict[str, Any], smtp: dict[str, Any], p: str, cloud: Cloud) -> list[str]:
    smtp.setdefault("host", cloud.acs_host)
    errors = _tls_on_587(smtp, p, "acs", _ACS_HOSTS)
    errors += _wrong_endpoint(smtp, p, "acs", f"{cloud.acs_host}:587")
    errors += _no_client_cert(smtp, p, "acs")
    auth = smtp.get("auth")
    secret = "the Entra app's client secret is the SMTP password"
    if not isinstance(auth, Mapping):
        errors.append(
            f"{p}.smtp.auth: required by mode acs: method password, username "
            "<ACS resource name>.<Entra app id>.<tenant id> (or an SMTP Username resource); "
            f"{secret}"
        )
    elif auth.get("method") != "password":
        errors.append(
            f'{p}.smtp.auth.method: mode acs needs method "password": {secret} (AUTH LOGIN), '
            "not an OAuth token"
        )
    elif auth.get("password") is None:
        moved = " (write it as password_file, not client_secret)" if "client_secret" in auth else ""
        errors.append(f"{p}.smtp.auth.password: required by mode acs: {secret}{moved}")
        # Stands in for the missing secret, so this line is the only one about it.
        smtp["auth"] = {**auth, "password": Secret("")}
    return errors


def _mx_host(smtp: Mapping[str, Any], p: str, mode: str, cloud: Cloud) -> list[str]:
    example = f"<domain with - for .>.{cloud.mx_suffix}"
    if smtp.get("host") is None:
        return [
            f"{p}.smtp.host: required by mode {mode}: the tenant's MX host, e.g. "
            f"contoso-com.{cloud.mx_suffix}"
        ]
    return _wrong_endpoint(smtp, p, mode, f"the tenant's MX host ({example})")


def _direct_send(
    t: dict[str, Any], smtp: dict[str, Any], p: str, cloud: Cloud, warnings: list[str]
) -> list[str]:
    errors = _mx_host(smtp, p, "direct_send", cloud)
    smtp.setdefault("security", "starttls")
    if "auth" in smtp:
        errors.append(
            f"{p}.smtp.auth: not allowed with mode direct_send: direct send is "
            f"anonymous (remove auth, or use mode submission on {cloud.submission_host})"
        )
    errors += _no_client_cert(smtp, p, "direct_send")
    host, rcpt = _host(smtp), _domain(t.get("rcpt_to"))
    suffix = next((s for s in MX_SUFFIXES if host.endswith("." + s)), None)
    if suffix is not None and rcpt is not None:
        # contoso-com.mail.protection.outlook.com serves contoso.com ("." written as "-").
        label = host[: -len(suffix) - 1]
        if re.sub(r"[.-]", "-", rcpt) != label:
            warnings.append(
                f"{p}.rcpt_to: direct send delivers only to mailboxes of the tenant "
                f"behind {host}; is {rcpt} one of its accepted domains?"
            )
    return errors


def _connector(t: dict[str, Any], smtp: dict[str, Any], p: str, cloud: Cloud) -> list[str]:
    errors = _mx_host(smtp, p, "connector", cloud)
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


def _basic_auth_warning(t: Mapping[str, Any], smtp: Mapping[str, Any], p: str) -> list[str]:
    """A password over SMTP AUTH submission stops working by default at the end of December
    2026 (docs/m365.md#smtp-auth-basic-authentication): say so while there is time."""
    mode = t.get("mode")
    submission = mode == "submission" or (mode is None and _host(smtp) in SUBMISSION_HOSTS)
    if not submission or _auth_method(smtp) != "password":
        return []
    return [
        f'{p}.smtp.auth.method: "password" over SMTP AUTH submission: Microsoft switches basic '
        "authentication off by default for existing tenants at the end of December 2026; move "
        "to XOAUTH2 (auth.method: oauth2) or to High Volume Email or Azure Communication "
        "Services (mode: hve or mode: acs)"
    ]


def apply_preset(target: Any, where: str, errors: list[str], warnings: list[str]) -> Any:
    """Fill the defaults of an explicitly set ``mode`` and report contradictions (raw YAML data,
    secrets already resolved; ``cloud`` already resolved by probe/config/clouds.py).

    Only a ``mode`` written in the file applies a preset, so targets without one (test relays)
    keep plain validation. A preset fills the cloud's host (smtp and, when left out, mailbox);
    explicit values win. Port defaults come from ``security`` as usual, except direct send and
    connector, which use 25 (the tenant MX). Problems are "path: message" lines.
    """
    if not isinstance(target, Mapping) or not isinstance(target.get("smtp"), Mapping):
        return target
    warnings += _basic_auth_warning(target, target["smtp"], where)
    mode = target.get("mode")
    if mode not in MODES:
        return target  # absent or invalid: pydantic reports an invalid value
    t, smtp, cloud = dict(target), dict(target["smtp"]), cloud_of(target.get("cloud"))
    if mode == "submission":
        errors += _submission(t, smtp, where, cloud)
    elif mode == "hve":
        errors += _hve(t, smtp, where, cloud, warnings)
    elif mode == "acs":
        errors += _acs(t, smtp, where, cloud)
    elif mode == "direct_send":
        smtp.setdefault("port", 25)
        errors += _direct_send(t, smtp, where, cloud, warnings)
    else:
        smtp.setdefault("port", 25)
        errors += _connector(t, smtp, where, cloud)
    t["smtp"] = smtp
    mailbox = t.get("mailbox")
    graph = isinstance(mailbox, Mapping) and mailbox.get("protocol") == "graph"  # no IMAP host
    if isinstance(mailbox, Mapping) and "host" not in mailbox and not graph:
        t["mailbox"] = {**mailbox, "host": cloud.imap_host}
    return t
