"""Microsoft clouds (global, GCC, GCC High, DoD, 21Vianet): the one table of per-cloud endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

CloudName = Literal["global", "gcc", "gcc_high", "dod", "china"]
DEFAULT_CLOUD = "global"


@dataclass(frozen=True)
class Cloud:
    """Where one Microsoft cloud lives. Every value is only a default: an explicit smtp.host,
    mailbox.host, auth.authority or auth.scope in the config wins (docs/configuration.md#cloud).
    ``unverified`` names the fields no Microsoft page confirmed (docs/m365.md#sovereign-clouds)."""

    name: str
    login_host: str  # the Entra authority's host; the tenant is appended
    exchange: str  # Exchange Online's resource URI: app-only scope "<exchange>/.default"
    delegated: str  # the resource of the delegated permissions (SMTP.Send, IMAP.AccessAsUser.All)
    submission_host: str  # SMTP AUTH client submission, port 587
    imap_host: str
    mx_suffix: str  # the tenant MX is "<domain with - for .>.<mx_suffix>"
    hve_host: str  # High Volume Email
    acs_host: str  # Azure Communication Services Email
    # Microsoft Graph's service root (mailbox.protocol graph, message trace): app-only scope
    # "<graph>/.default" (docs/m365.md#microsoft-graph).
    graph: str = "https://graph.microsoft.com"
    unverified: frozenset[str] = frozenset()

    @property
    def authority(self) -> str:
        return f"https://{self.login_host}/"

    def authority_for(self, tenant: str | None) -> str:
        """The Entra authority URL of ``tenant`` (a tenant id or domain) in this cloud."""
        return f"{self.authority}{tenant or ''}".rstrip("/")

    @property
    def scope(self) -> str:
        """The app-only (client credentials) scope for SMTP and IMAP."""
        return f"{self.exchange}/.default"

    @property
    def graph_scope(self) -> str:
        """The app-only scope of Microsoft Graph in this cloud (mailbox.protocol graph)."""
        return f"{self.graph}/.default"

    def delegated_scope(self, protocol: str) -> str:
        """The delegated permission a device-code sign-in asks for ("smtp" or "imap")."""
        return f"{self.delegated}/{'SMTP.Send' if protocol == 'smtp' else 'IMAP.AccessAsUser.All'}"


# HVE and ACS answer on the same host names in every cloud as far as anyone reports; for the
# sovereign clouds that is a guess (unverified), like their mail hosts (docs/m365.md).
_HVE, _ACS = "smtp.hve.mx.microsoft", "smtp.azurecomm.net"
_GUESSED = frozenset({"hve_host", "acs_host"})
_SOVEREIGN = _GUESSED | {"exchange", "delegated", "submission_host", "imap_host", "mx_suffix"}

CLOUDS: dict[str, Cloud] = {
    "global": Cloud(
        "global",
        login_host="login.microsoftonline.com",
        exchange="https://outlook.office365.com",
        delegated="https://outlook.office.com",
        submission_host="smtp.office365.com",
        imap_host="outlook.office365.com",
        mx_suffix="mail.protection.outlook.com",
        hve_host=_HVE,
        acs_host=_ACS,
        unverified=_GUESSED,
    ),
    # GCC tenants live in the commercial cloud: same authority and mail hosts.
    "gcc": Cloud(
        "gcc",
        login_host="login.microsoftonline.com",
        exchange="https://outlook.office365.com",
        delegated="https://outlook.office.com",
        submission_host="smtp.office365.com",
        imap_host="outlook.office365.com",
        mx_suffix="mail.protection.outlook.com",
        hve_host=_HVE,
        acs_host=_ACS,
        # Microsoft's deployments page lists only the US Government L4/L5 and China roots.
        unverified=_SOVEREIGN | {"graph"},
    ),
    "gcc_high": Cloud(
        "gcc_high",
        login_host="login.microsoftonline.us",
        exchange="https://outlook.office365.us",
        delegated="https://outlook.office365.us",
        submission_host="smtp.office365.us",
        imap_host="outlook.office365.us",
        mx_suffix="mail.protection.office365.us",
        hve_host=_HVE,
        acs_host=_ACS,
        graph="https://graph.microsoft.us",
        unverified=_SOVEREIGN,
    ),
    # No smtp-dod host is known anywhere: DoD clients submit to outlook-dod.office365.us.
    "dod": Cloud(
        "dod",
        login_host="login.microsoftonline.us",
        exchange="https://outlook-dod.office365.us",
        delegated="https://outlook-dod.office365.us",
        submission_host="outlook-dod.office365.us",
        imap_host="outlook-dod.office365.us",
        mx_suffix="mail.protection.office365.us",
        hve_host=_HVE,
        acs_host=_ACS,
        graph="https://dod-graph.microsoft.us",
        unverified=_SOVEREIGN,
    ),
    "china": Cloud(
        "china",
        login_host="login.partner.microsoftonline.cn",
        exchange="https://partner.outlook.cn",
        delegated="https://partner.outlook.cn",
        submission_host="smtp.partner.outlook.cn",
        imap_host="partner.outlook.cn",
        mx_suffix="mail.protection.partner.outlook.cn",
        hve_host=_HVE,
        acs_host=_ACS,
        graph="https://microsoftgraph.chinacloudapi.cn",
        unverified=_SOVEREIGN,
    ),
}

SUBMISSION_HOSTS = frozenset(c.submission_host for c in CLOUDS.values())
MX_SUFFIXES = tuple(sorted({c.mx_suffix for c in CLOUDS.values()}, key=len, reverse=True))


def cloud_of(name: Any) -> Cloud:
    """The cloud called ``name``; the global one for anything else (the model reports it)."""
    return CLOUDS[name] if isinstance(name, str) and name in CLOUDS else CLOUDS[DEFAULT_CLOUD]


def apply_cloud(target: Any, default: Any) -> Any:
    """Resolve a target's cloud on raw YAML data: its own ``cloud``, else ``defaults.cloud``,
    copied into each auth block that names none (an oauth2 block's authority and scope follow it)."""
    if not isinstance(target, Mapping):
        return target
    t = dict(target)
    if "cloud" not in t and isinstance(default, str) and default in CLOUDS:
        t["cloud"] = default  # a bad defaults.cloud is reported once, at defaults.cloud
    name = t.get("cloud", DEFAULT_CLOUD)
    if not isinstance(name, str) or name not in CLOUDS:
        return t  # reported at targets[i].cloud; the auth blocks keep their own default
    for side in ("smtp", "mailbox"):
        block = t.get(side)
        auth = block.get("auth") if isinstance(block, Mapping) else None
        if isinstance(auth, Mapping) and "cloud" not in auth:
            t[side] = {**block, "auth": {**auth, "cloud": name}}
    return t
