"""The config's pydantic models (as read from YAML and as resolved) and ConfigError."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from probe.config.clouds import CloudName, cloud_of
from probe.config.fields import (
    Address,
    CaFile,
    DnsServer,
    Duration,
    File,
    Host,
    Name,
    NewFile,
    Port,
    Positive,
    Text,
    checked,
    field_error,
    no_bool,
    results_field,
    sha1_thumbprint,
)
from probe.config.secrets import Secret


class ConfigError(Exception):
    """Every problem found in a configuration, one "path: message" line each."""

    def __init__(
        self,
        errors: list[str] | str,
        *,
        file: Path | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.file = file  # the config file, when loaded from one
        # Warnings found before validation failed: --json output reports them with the errors.
        self.warnings = list(warnings or [])
        super().__init__("\n".join(self.errors))


def default_instance() -> str:
    """The short host name, made into a valid name (instance ids are label values and tag fields)."""
    short = socket.gethostname().split(".")[0]
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", short).lstrip("_.-")[:63]
    return clean or "relayprobe"


class _Model(BaseModel):
    # hide_input_in_errors: a ValidationError from direct construction must not echo a password.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    _secret_fields: ClassVar[tuple[str, ...]] = ()


def _problems(*pairs: tuple[str, str]) -> None:
    """Raise every cross-field problem of one model at once (field, message)."""
    if pairs:
        raise field_error("; ".join(m for _f, m in pairs), tuple(pairs))


class Auth(_Model):
    _secret_fields = ("password", "client_secret", "certificate_passphrase", "token")
    _allowed: ClassVar[dict[str, set[str]]] = {
        "password": {"password"},
        "token": {"token"},
        "oauth2": {"tenant_id", "client_id", "client_secret", "certificate_file", "thumbprint"}
        | {"certificate_passphrase", "authority", "scope", "flow", "token_cache_file"},
    }
    #: Keys a confidential client (app credential) uses and a device-code sign-in must not.
    _app_only: ClassVar[tuple[str, ...]] = (
        "client_secret",
        "certificate_file",
        "thumbprint",
        "certificate_passphrase",
    )

    method: Literal["password", "oauth2", "token"]
    username: Text
    password: Secret | None = None
    tenant_id: Text | None = None
    client_id: Text | None = None
    client_secret: Secret | None = None
    certificate_file: File | None = None
    thumbprint: Annotated[str, AfterValidator(checked(sha1_thumbprint))] | None = None
    certificate_passphrase: Secret | None = None
    authority: Annotated[str, Field(pattern=r"^https://\S+$")] | None = None
    # oauth2: its cloud's scope unless written (fill_scope); smtp/mailbox fill delegated ones first.
    scope: Text | None = None
    # The cloud whose authority and scope the block uses: the target's unless written here (the
    # loader copies it in; docs/configuration.md#cloud). Any method may carry it.
    cloud: CloudName = "global"
    token: Secret | None = None
    # device_code: a user signs in once (relayprobe login); the refresh token lives in this file.
    flow: Literal["client_credentials", "device_code"] = "client_credentials"
    token_cache_file: NewFile | None = None

    @model_validator(mode="before")
    @classmethod
    def fill_scope(cls, data: Any) -> Any:
        """An oauth2 block without scope asks for its cloud's Exchange Online (app-only) scope."""
        if isinstance(data, dict) and data.get("method") == "oauth2" and "scope" not in data:
            data = {**data, "scope": cloud_of(data.get("cloud")).scope}
        return data

    @model_validator(mode="after")
    def check_rules(self) -> Auth:
        m, got = self.method, {k for k in self.model_fields_set if getattr(self, k) is not None}
        out = [
            (k, f'not used by method "{m}"')
            for k in sorted(got - self._allowed[m] - {"method", "cloud"})
        ]
        out.remove(("username", f'not used by method "{m}"')) if "username" in got else None
        need = {"password": "password", "token": "token", "oauth2": "client_id"}[m]
        if need not in got:
            alt = f" or {need}_file" if need in self._secret_fields else ""
            out.append((need, f'required by method "{m}" (set {need}{alt})'))
        if m == "oauth2" and {"tenant_id", "authority"} <= got:
            # The authority wins (probe/m365/authority.py) and tenant_id would be silently
            # ignored, though the two may name different tenants. "" is the auth block itself.
            both = "set either tenant_id or authority, not both"
            out.append(("", f"{both} (authority already names the tenant)"))
        if m == "oauth2" and self.flow == "device_code":
            out += self._device_code_problems(got)
        elif m == "oauth2":
            if "token_cache_file" in got:
                out.append(("token_cache_file", 'only used with flow "device_code"'))
            if not got & {"tenant_id", "authority"}:
                out.append(("tenant_id", 'required by method "oauth2" (or set authority)'))
            creds = got & {"client_secret", "certificate_file"}
            if len(creds) != 1:
                what = "not both" if creds else "one is required"
                out.append(("client_secret", f"set client_secret or certificate_file, {what}"))
            if "certificate_file" in got and "thumbprint" not in got:
                out.append(("thumbprint", "required with certificate_file"))
            for k in ("thumbprint", "certificate_passphrase"):
                if k in got and "certificate_file" not in got:
                    out.append((k, "only used with certificate_file"))
        _problems(*out)
        return self

    def _device_code_problems(self, got: set[str]) -> list[tuple[str, str]]:
        out = []
        if not got & {"tenant_id", "authority"}:
            out.append(("tenant_id", 'required by method "oauth2" (or set authority)'))
        if "token_cache_file" not in got:
            out.append(
                (
                    "token_cache_file",
                    'required by flow "device_code": the file that '
                    "keeps the refresh token from relayprobe login",
                )
            )
        for k in self._app_only:
            if k in got:
                out.append(
                    (
                        k,
                        'not used by flow "device_code": a user signs in, not the app '
                        '(remove it, or use flow "client_credentials")',
                    )
                )
        return out


def _delegated_scope(protocol: str) -> Any:
    """Fill auth.scope with the protocol's delegated permission for a device-code sign-in, in the
    block's cloud (MSAL adds offline_access, openid and profile itself and refuses them)."""

    def fill(data: Any) -> Any:
        auth = data.get("auth") if isinstance(data, dict) else None
        device = isinstance(auth, dict) and (auth.get("method"), auth.get("flow")) == (
            "oauth2",
            "device_code",
        )
        if device and "scope" not in auth:
            scope = cloud_of(auth.get("cloud")).delegated_scope(protocol)
            data = {**data, "auth": {**auth, "scope": scope}}
        return data

    return model_validator(mode="before")(classmethod(lambda _cls, data: fill(data)))


def _default_port(ports: dict[str, int]) -> Any:
    def fill(data: Any) -> Any:
        # A graph mailbox gets its port from graph_url (_graph_fill), whichever runs first.
        graph = isinstance(data, dict) and data.get("protocol") == "graph"
        if isinstance(data, dict) and data.get("port") is None and not graph:
            sec = data.get("security", next(iter(ports)))
            data = (
                {**data, "port": ports[sec]}
                if isinstance(sec, str) and sec in ports
                else {**data, "port": 1}
            )
        return data

    return model_validator(mode="before")(classmethod(lambda _cls, data: fill(data)))


class Smtp(_Model):
    host: Host
    port: Port = 587  # filled from security when left out: starttls 587, tls 465, none 25
    security: Literal["starttls", "tls", "none"] = "starttls"
    ca_file: CaFile | None = None
    client_cert_file: File | None = None
    client_key_file: File | None = None
    helo: Text | None = None
    timeout: Positive = 30.0
    auth: Auth | None = None

    fill_port = _default_port({"starttls": 587, "tls": 465, "none": 25})
    fill_scope = _delegated_scope("smtp")

    @model_validator(mode="after")
    def check_rules(self) -> Smtp:
        out = []
        if self.security == "none" and self.auth is not None:
            out.append(
                (
                    "auth",
                    'not allowed with security "none": never send credentials '
                    "unencrypted; use starttls or tls",
                )
            )
        if self.client_cert_file and not self.client_key_file:
            out.append(("client_key_file", "required with client_cert_file"))
        if self.client_key_file and not self.client_cert_file:
            out.append(("client_cert_file", "required with client_key_file"))
        _problems(*out)
        return self


class GraphPoll(_Model):
    """How often a Graph mailbox is asked for new mail (docs/configuration.md#microsoft-graph)."""

    fast: Positive = 0.25  # seconds between polls right after a send
    fast_window: Positive = 5.0  # how long after a send the fast polls go on
    interval: Positive = 2.0  # while a probe is awaited, after the fast window
    idle: Positive = 60.0  # nothing awaited: late mail and other runs' stale mail


#: Mailbox keys that only IMAP uses: a graph mailbox naming one is a config error.
_IMAP_ONLY = ("host", "port", "security")
#: Mailbox keys that only Graph uses.
_GRAPH_ONLY = ("user", "graph_url", "poll")


def _graph_fill(data: Any) -> Any:
    """A graph mailbox: report IMAP-only keys, then fill host/port/security from the Graph URL
    (one place for the scheduler's mailbox key and messages) and the app-only Graph scope of the
    block's cloud (docs/configuration.md#microsoft-graph)."""
    if not isinstance(data, dict) or data.get("protocol") != "graph":
        return data
    wrong = [(k, 'only for protocol "imap" (a graph mailbox uses graph_url)') for k in _IMAP_ONLY]
    _problems(*[(k, m) for k, m in wrong if k in data])
    auth = data.get("auth")
    cloud = cloud_of(auth.get("cloud") if isinstance(auth, dict) else None)
    url = data.get("graph_url") or cloud.graph
    data = {**data, "graph_url": url}
    # A malformed graph_url is reported at graph_url; host and port then come from the cloud.
    m = re.match(r"^https://([^/:\s]+)(?::(\d+))?/?$", url if isinstance(url, str) else "")
    m = m or re.match(r"^https://([^/:\s]+)(?::(\d+))?/?$", cloud.graph)
    if m is not None:
        data |= {"host": m.group(1), "port": int(m.group(2) or 443), "security": "tls"}
    if isinstance(auth, dict) and auth.get("method") == "oauth2" and "scope" not in auth:
        data["auth"] = {**auth, "scope": cloud.graph_scope}
    return data


class Mailbox(_Model):
    # imap (default) or graph: Microsoft Graph for tenants with IMAP switched off (probe/graph/).
    protocol: Literal["imap", "graph"] = "imap"
    host: Host  # graph: filled from graph_url
    port: Port = 993  # filled from security when left out: tls 993, starttls 143
    security: Literal["tls", "starttls"] = "tls"
    ca_file: CaFile | None = None
    timeout: Positive = 30.0
    folder: Text = "INBOX"
    auth: Auth
    # graph: the mailbox's UPN or object id (default auth.username), the service root (default
    # the cloud's, probe/config/clouds.py) and how often to poll.
    user: Text | None = None
    graph_url: Annotated[str, Field(pattern=r"^https://[^/\s]+/?$")] | None = None
    poll: GraphPoll | None = None

    fill_graph = model_validator(mode="before")(classmethod(lambda _cls, data: _graph_fill(data)))
    fill_port = _default_port({"tls": 993, "starttls": 143})
    fill_scope = _delegated_scope("imap")

    @model_validator(mode="after")
    def check_protocol(self) -> Mailbox:
        got = {k for k in self.model_fields_set if getattr(self, k) is not None}
        if self.protocol == "imap":
            _problems(*[(k, 'only for protocol "graph"') for k in _GRAPH_ONLY if k in got])
            return self
        a, out = self.auth, []
        if a.method != "oauth2" or a.flow != "client_credentials":
            # Graph mail access here is app-only: Mail.ReadWrite scoped to this one mailbox with
            # RBAC for Applications (docs/configuration.md#microsoft-graph).
            out.append(
                (
                    "auth.method",
                    'protocol "graph" needs app-only OAuth (method "oauth2", flow '
                    '"client_credentials") with the Mail.ReadWrite application permission',
                )
            )
        _problems(*out)
        return self

    @property
    def graph_user(self) -> str:
        """The mailbox Graph reads: ``user`` or the auth block's username."""
        return self.user or self.auth.username


class Expect(_Model):
    spf: results_field("spf") = None
    dkim: results_field("dkim") = None
    dmarc: results_field("dmarc") = None
    compauth: results_field("compauth") = None
    max_scl: Annotated[int, BeforeValidator(checked(no_bool)), Field(ge=-1, le=9)] | None = None
    placement: Literal["inbox", "junk", "any"] = "inbox"
    junk_severity: Literal["warning", "critical"] = "critical"


class Thresholds(_Model):
    warning: Positive | None = None
    critical: Positive | None = None


class TraceSettings(_Model):
    """Message trace on failure (probe/graph/trace.py, docs/configuration.md#message-trace):
    opt-in, app-only (ExchangeMessageTrace.Read.All), global cloud only."""

    enabled: bool = False
    # Credentials: the mailbox's app-only oauth2 client, asking for Graph's scope (one app).
    # Message traces a minute for this whole process: Microsoft allows 100 requests per 5
    # minutes per tenant and a trace takes two (docs/m365.md#message-trace).
    max_per_minute: Annotated[int, BeforeValidator(checked(no_bool)), Field(ge=1, le=20)] = 4
    # Graph's service root and its CA file: a graph mailbox's by default, else the cloud's.
    graph_url: Annotated[str, Field(pattern=r"^https://[^/\s]+/?$")] | None = None
    ca_file: CaFile | None = None


class Posture(_Model):
    """DNS posture of the sending domain (probe/posture/, docs/configuration.md#posture)."""

    enabled: bool = False  # the daemon's scheduled checks; failing-verdict explanations always run
    interval: Positive = 3600.0
    dns_server: DnsServer | None = None  # IP[:PORT]; None: the system resolver
    timeout: Positive = 5.0  # per DNS lookup (explanations inside a probe use at most 2 s)
    # None: the mode's (Microsoft 365's selector1/selector2; ACS's pair for mode acs)
    dkim_selectors: list[Text] | None = None
    # None: from the mode (docs/configuration.md#posture: all but direct_send)
    require_microsoft_include: bool | None = None
    # The tenant's initial domain (contoso or contoso.onmicrosoft.com): DKIM CNAMEs must name it.
    tenant: Text | None = None
    ca_file: CaFile | None = None  # trust for the MTA-STS policy's HTTPS (default: system store)
    # Append the DNS cause to a failed spf/dkim/dmarc check (off: the records are not in any DNS
    # relayprobe can ask, like the demo's in-memory mail system).
    explain: bool = True


class TargetBase(_Model):
    name: Name
    # Relay path (probe/config/presets.py); exporters label metrics with mode and cloud.
    mode: Literal["submission", "direct_send", "connector", "hve", "acs"] = "submission"
    # Microsoft cloud: default hosts, authority and scope (probe/config/clouds.py); the loader
    # fills it from defaults.cloud when the target sets none.
    cloud: CloudName = "global"
    smtp: Smtp
    mail_from: Address
    rcpt_to: Address
    mailbox: Mailbox


class Target(TargetBase):
    interval: float
    timeout: float
    jitter: float
    junk_folders: list[str]
    expect: Expect
    thresholds: Thresholds
    trace: TraceSettings = Field(default_factory=TraceSettings)
    posture: Posture = Field(default_factory=Posture)


class TargetIn(TargetBase):
    interval: Positive | None = None
    timeout: Positive | None = None
    jitter: Duration | None = None
    junk_folders: list[Text] | None = None
    expect: Expect | None = None
    thresholds: Thresholds | None = None
    trace: TraceSettings | None = None
    posture: Posture | None = None


class Defaults(_Model):
    interval: Positive = 300.0
    timeout: Positive = 300.0
    jitter: Duration = 15.0
    junk_folders: list[Text] = Field(default_factory=lambda: ["Junk Email"])
    late_grace: Duration = 3600.0
    cloud: CloudName = "global"
    expect: Expect = Field(default_factory=Expect)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    posture: Posture = Field(default_factory=Posture)


class ConfigIn(_Model):
    _secret_fields = ("tag_secret",)
    instance: Name = Field(default_factory=default_instance)
    tag_secret: Secret
    defaults: Defaults = Field(default_factory=Defaults)
    targets: Annotated[list[TargetIn], Field(min_length=1)]


class Config(_Model):
    instance: Name = Field(default_factory=default_instance)
    tag_secret: Secret
    defaults: Defaults = Field(default_factory=Defaults)
    targets: list[Target]
    warnings: list[str] = Field(default_factory=list)  # set by the loader, never read from YAML

    def target(self, name: str) -> Target:
        """The target called ``name``; ConfigError (not KeyError) naming the configured ones."""
        for t in self.targets:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.targets)
        raise ConfigError(f'target "{name}" not found; configured: {names}')
