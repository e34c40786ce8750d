"""The relayprobe configuration: YAML in, typed and validated models out, every problem reported."""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
import socket
import ssl
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from probe.durations import format_duration, parse_duration
from probe.presets import apply_preset
from probe.secrets import Secret, resolve_path, resolve_secrets

__all__ = [
    "Auth",
    "Config",
    "ConfigError",
    "Defaults",
    "Expect",
    "Mailbox",
    "Secret",
    "Smtp",
    "Target",
    "Thresholds",
    "load_config",
    "parse_config",
    "parse_duration",
    "redacted_dict",
]


class ConfigError(Exception):
    """Every problem found in a configuration, one "path: message" line each."""

    def __init__(self, errors: list[str] | str, *, file: Path | None = None) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.file = file  # the config file, when loaded from one
        super().__init__("\n".join(self.errors))


def _err(msg: str, problems: tuple[tuple[str, str], ...] = ()) -> PydanticCustomError:
    # "{msg}" as the template: a value holding braces must not be read as a placeholder.
    return PydanticCustomError("relayprobe", "{msg}", {"msg": msg, "problems": problems})


def _check(fn: Any) -> Any:
    """Turn a validator's ValueError into our error type, keeping its text as the message."""

    @functools.wraps(fn)  # keeps the signature: pydantic passes ValidationInfo when fn takes it
    def wrapped(v: Any, *args: Any) -> Any:
        try:
            return fn(v, *args)
        except ValueError as e:
            raise _err(str(e)) from None

    return wrapped


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"
_ADDRESS = re.compile(
    rf'(?:{_ATEXT}(?:\.{_ATEXT})*|"(?:[^"\\\r\n]|\\.)*")@'
    r"(?:[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]*[A-Za-z0-9\x80-\U0010ffff])?"
    r"(?:\.[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]*[A-Za-z0-9\x80-\U0010ffff])?)*"
    r"|\[[A-Za-z0-9.:-]+\])"
)
_RESULTS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "dkim": ("pass", "fail", "policy", "neutral", "none", "temperror", "permerror"),
    "dmarc": ("pass", "bestguesspass", "fail", "none", "temperror", "permerror"),
    "compauth": ("pass", "softpass", "fail", "none"),
}


def _name(v: str) -> str:
    if not _NAME.fullmatch(v):
        raise ValueError(
            f'invalid name "{v}": use 1-63 letters, digits, "_", "." or "-", '
            "starting with a letter or digit"
        )
    return v


def _address(v: str) -> str:
    if not _ADDRESS.fullmatch(v):
        raise ValueError(f'invalid address "{v}": write a bare address like probe@contoso.com')
    return v


def _host(v: str) -> str:
    if not v or re.search(r"[\s/@]", v):
        raise ValueError(f'invalid host "{v}": give a host name or IP address only')
    if ":" in v:
        try:
            ipaddress.IPv6Address(v)
        except ValueError:
            raise ValueError(f'invalid host "{v}": put the port in port, not in host') from None
    return v


def _duration(v: Any) -> float:
    return parse_duration(v)


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError(f"must be greater than 0, got {v:g}")
    return v


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {str(v).lower()}")
    return v


def _readable(v: Path, info: ValidationInfo) -> Path:
    p = resolve_path(v, (info.context or {}).get("base_dir"))
    try:
        with open(p, "rb"):
            pass
    except OSError as e:
        raise ValueError(f'cannot read "{p}": {e.strerror or e}') from None
    return p


def _ca_bundle(v: Path) -> Path:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=v)
    except (ssl.SSLError, ValueError):
        raise ValueError(f'"{v}" holds no PEM CA certificate') from None
    return v


def _thumbprint(v: str) -> str:
    t = re.sub(r"[\s:]", "", v)
    if not re.fullmatch(r"[0-9A-Fa-f]{40}", t):
        raise ValueError(f'invalid thumbprint "{v}": expected the SHA-1 thumbprint, 40 hex digits')
    return t.upper()


def _results(key: str) -> Any:
    def check(v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must not be empty; omit the key to skip this check")
        out = [r.lower() for r in v]
        for r in out:
            if r not in _RESULTS[key]:
                hint = difflib.get_close_matches(r, _RESULTS[key], 1)
                near = f' (did you mean "{hint[0]}"?)' if hint else ""
                raise ValueError(f'unknown result "{r}"{near}; expected {", ".join(_RESULTS[key])}')
        return out

    return check


Name = Annotated[str, AfterValidator(_check(_name))]
Address = Annotated[str, AfterValidator(_check(_address))]
Host = Annotated[str, AfterValidator(_check(_host))]
Text = Annotated[str, Field(min_length=1)]
Port = Annotated[int, BeforeValidator(_check(_no_bool)), Field(ge=1, le=65535)]
Duration = Annotated[float, BeforeValidator(_check(_duration))]
Positive = Annotated[float, BeforeValidator(_check(_duration)), AfterValidator(_check(_positive))]
File = Annotated[Path, AfterValidator(_check(_readable))]
CaFile = Annotated[File, AfterValidator(_check(_ca_bundle))]
_one_or_many = BeforeValidator(lambda v: [v] if isinstance(v, str) else v)


def _results_field(key: str) -> Any:
    return Annotated[list[str] | None, _one_or_many, AfterValidator(_check(_opt(_results(key))))]


def _opt(fn: Any) -> Any:
    return lambda v: None if v is None else fn(v)


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
        raise _err("; ".join(m for _f, m in pairs), tuple(pairs))


class Auth(_Model):
    _secret_fields = ("password", "client_secret", "certificate_passphrase", "token")
    _allowed: ClassVar[dict[str, set[str]]] = {
        "password": {"password"},
        "token": {"token"},
        "oauth2": {"tenant_id", "client_id", "client_secret", "certificate_file", "thumbprint"}
        | {"certificate_passphrase", "authority", "scope"},
    }

    method: Literal["password", "oauth2", "token"]
    username: Text
    password: Secret | None = None
    tenant_id: Text | None = None
    client_id: Text | None = None
    client_secret: Secret | None = None
    certificate_file: File | None = None
    thumbprint: Annotated[str, AfterValidator(_check(_thumbprint))] | None = None
    certificate_passphrase: Secret | None = None
    authority: Annotated[str, Field(pattern=r"^https://\S+$")] | None = None
    scope: Text = "https://outlook.office365.com/.default"
    token: Secret | None = None

    @model_validator(mode="after")
    def check_rules(self) -> Auth:
        m, got = self.method, {k for k in self.model_fields_set if getattr(self, k) is not None}
        out = [
            (k, f'not used by method "{m}"') for k in sorted(got - self._allowed[m] - {"method"})
        ]
        out.remove(("username", f'not used by method "{m}"')) if "username" in got else None
        need = {"password": "password", "token": "token", "oauth2": "client_id"}[m]
        if need not in got:
            alt = f" or {need}_file" if need in self._secret_fields else ""
            out.append((need, f'required by method "{m}" (set {need}{alt})'))
        if m == "oauth2":
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


def _default_port(ports: dict[str, int]) -> Any:
    def fill(data: Any) -> Any:
        if isinstance(data, dict) and data.get("port") is None:
            sec = data.get("security", next(iter(ports)))
            data = {**data, "port": ports[sec]} if sec in ports else {**data, "port": 1}
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

    @model_validator(mode="after")
    def check_rules(self) -> Smtp:
        out = []
        if self.security == "none" and self.auth is not None:
            out.append(("auth", 'not allowed with security "none": never send credentials '
                        "unencrypted; use starttls or tls"))  # fmt: skip
        if self.client_cert_file and not self.client_key_file:
            out.append(("client_key_file", "required with client_cert_file"))
        if self.client_key_file and not self.client_cert_file:
            out.append(("client_cert_file", "required with client_key_file"))
        _problems(*out)
        return self


class Mailbox(_Model):
    host: Host
    port: Port = 993  # filled from security when left out: tls 993, starttls 143
    security: Literal["tls", "starttls"] = "tls"
    ca_file: CaFile | None = None
    timeout: Positive = 30.0
    folder: Text = "INBOX"
    auth: Auth

    fill_port = _default_port({"tls": 993, "starttls": 143})


class Expect(_Model):
    spf: _results_field("spf") = None
    dkim: _results_field("dkim") = None
    dmarc: _results_field("dmarc") = None
    compauth: _results_field("compauth") = None
    max_scl: Annotated[int, BeforeValidator(_check(_no_bool)), Field(ge=-1, le=9)] | None = None
    placement: Literal["inbox", "junk", "any"] = "inbox"
    junk_severity: Literal["warning", "critical"] = "critical"


class Thresholds(_Model):
    warning: Positive | None = None
    critical: Positive | None = None


class _TargetBase(_Model):
    name: Name
    mode: Literal["submission", "direct_send", "connector"] = "submission"
    smtp: Smtp
    mail_from: Address
    rcpt_to: Address
    mailbox: Mailbox


class Target(_TargetBase):
    interval: float
    timeout: float
    jitter: float
    junk_folders: list[str]
    expect: Expect
    thresholds: Thresholds


class _TargetIn(_TargetBase):
    interval: Positive | None = None
    timeout: Positive | None = None
    jitter: Duration | None = None
    junk_folders: list[Text] | None = None
    expect: Expect | None = None
    thresholds: Thresholds | None = None


class Defaults(_Model):
    interval: Positive = 300.0
    timeout: Positive = 300.0
    jitter: Duration = 15.0
    junk_folders: list[Text] = Field(default_factory=lambda: ["Junk Email"])
    late_grace: Duration = 3600.0
    expect: Expect = Field(default_factory=Expect)
    thresholds: Thresholds = Field(default_factory=Thresholds)


class _ConfigIn(_Model):
    _secret_fields = ("tag_secret",)
    instance: Name = Field(default_factory=default_instance)
    tag_secret: Secret
    defaults: Defaults = Field(default_factory=Defaults)
    targets: Annotated[list[_TargetIn], Field(min_length=1)]


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


# --- loading: YAML, secret indirection, pydantic's errors in our words, defaults merged ------------


class _Loader(yaml.SafeLoader):
    """safe_load that rejects duplicate keys (plain YAML silently keeps the last one)."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _v in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` may be overridden by the node's own keys
        key = loader.construct_object(key_node)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.MarkedYAMLError(
                problem=f'duplicate key "{key}"', problem_mark=key_node.start_mark
            )
        seen.add(key) if isinstance(key, typing.Hashable) else None
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "path_type": "a path string",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}  # fmt: skip
_HINTS = {"tls_mode": "security", "tls": "security", "ssl": "security", "encryption": "security",
          "user": "username", "login": "username", "server": "host", "hostname": "host",
          "from": "mail_from", "sender": "mail_from", "to": "rcpt_to", "recipient": "rcpt_to",
          "secret": "tag_secret", "imap": "mailbox", "submission": "smtp"}  # fmt: skip


def _kind(v: Any) -> str:
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, str):
        return "a string"
    return _show(v)


def _show(v: Any) -> str:
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, str):
        return json.dumps(v if len(v) <= 60 else v[:57] + "...", ensure_ascii=False)
    if isinstance(v, int | float):
        return repr(v)
    return _kind(v) if isinstance(v, Mapping | list | tuple) else type(v).__name__


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        if (m := _model(arg)) is not None:
            return m
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (for "did you mean")."""
    model: type[BaseModel] | None = _ConfigIn
    for part in loc:
        if isinstance(part, str):
            info = model.model_fields.get(part) if model else None
            model = _model(info.annotation) if info else None
    if model is None:
        return []
    return list(model.model_fields) + [f"{f}_file" for f in model._secret_fields]


def _translate(e: Any) -> list[str]:
    loc, kind, ctx, got = tuple(e["loc"]), e["type"], e.get("ctx") or {}, e.get("input")
    where = _path(loc)
    if kind == "relayprobe":
        if ctx.get("problems"):
            return [f"{where}.{f}: {m}" if where else f"{f}: {m}" for f, m in ctx["problems"]]
        msg = ctx["msg"]
    elif kind == "missing":
        secret = _keys_at(loc[:-1]).count(f"{loc[-1]}_file")
        msg = (
            f"missing required key (set {loc[-1]}_file or {loc[-1]})"
            if secret
            else "missing required key"
        )
    elif kind == "extra_forbidden":
        keys, key = _keys_at(loc[:-1]), str(loc[-1])
        near = [_HINTS[key]] if _HINTS.get(key) in keys else difflib.get_close_matches(key, keys, 1)
        msg = f'unknown key (did you mean "{near[0]}"?)' if near else "unknown key"
    elif kind in _EXPECTED:
        what = _EXPECTED[kind]
        msg = f"expected {what}, got {_kind(got) if what.startswith('a ') else _show(got)}"
    elif kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
        msg = f"expected one of {choices}, got {_show(got)}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than"):
        bound = {"greater_than_equal": "at least", "less_than_equal": "at most"}.get(kind, "over")
        limit = next(iter(ctx.values()))
        msg = f"must be {bound} {limit}, got {_show(got)}"
    elif kind in ("too_short", "string_too_short"):
        msg = "must not be empty"
    elif kind == "string_pattern_mismatch":
        msg = f"invalid value {_show(got)}: expected an https:// URL"
    else:
        msg = e["msg"][:1].lower() + e["msg"][1:]
    return [f"{where}: {msg}" if where else msg]


def _order(line: str) -> list[tuple[int, Any]]:
    path = line.split(": ", 1)[0]
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\[\]]+", path) if p]


def _prepare(data: Mapping[str, Any], env: Mapping[str, str], ctx: dict[str, Any]) -> dict:
    """Resolve every secret field (tag_secret and each auth block) before validation."""
    kw = {"base_dir": ctx["base_dir"], "environ": env}
    kw |= {"errors": ctx["errors"], "warnings": ctx["warnings"]}
    out = resolve_secrets(data, ("tag_secret",), "", min_bytes=16, **kw)  # type: ignore[arg-type]
    if not isinstance(out.get("targets"), list):
        return out
    out["targets"], seen = [dict(t) if isinstance(t, Mapping) else t for t in out["targets"]], {}
    for i, t in enumerate(out["targets"]):
        if not isinstance(t, dict):
            continue
        # Relay-mode presets (probe/presets.py): fill defaults, report contradictions.
        t = out["targets"][i] = apply_preset(t, f"targets[{i}]", ctx["errors"], ctx["warnings"])
        name = t.get("name")
        if isinstance(name, str) and seen.setdefault(name, i) != i:
            ctx["errors"].append(
                f'targets[{i}].name: duplicate name "{name}" (also targets[{seen[name]}])'
            )
        for sec in ("smtp", "mailbox"):
            s = t.get(sec)
            if isinstance(s, Mapping) and isinstance(s.get("auth"), Mapping):
                where = f"targets[{i}].{sec}.auth"
                t[sec] = {**s, "auth": resolve_secrets(s["auth"], Auth._secret_fields, where, **kw)}
    return out


def _merge(base: Any, own: Any) -> Any:
    """Defaults merged key by key: what the target sets explicitly wins."""
    return (
        base
        if own is None
        else base.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})
    )


def _threshold_problems(p: str, t: _TargetIn, th: Thresholds, timeout: float) -> list[str]:
    def own(key: str, model: Any) -> str:
        return "" if model is not None and key in model.model_fields_set else " (from defaults)"

    w, c = th.warning, th.critical
    ws, cs, ts = own("warning", t.thresholds), own("critical", t.thresholds), own("timeout", t)
    out = []
    if w is not None and c is not None and w > c:
        out.append(f"{p}.thresholds.warning: {format_duration(w)}{ws} must not exceed critical "
                   f"{format_duration(c)}{cs}")  # fmt: skip
    key, top, src = ("critical", c, cs) if c is not None else ("warning", w, ws)
    if top is not None and top > timeout:
        out.append(f"{p}.thresholds.{key}: {format_duration(top)}{src} must not exceed timeout "
                   f"{format_duration(timeout)}{ts}; a later arrival is a timeout")  # fmt: skip
    return out


def _resolve(cin: _ConfigIn, warnings: list[str], errors: list[str]) -> Config:
    d, targets = cin.defaults, []
    for i, t in enumerate(cin.targets):
        timeout = d.timeout if t.timeout is None else t.timeout
        thresholds = _merge(d.thresholds, t.thresholds)
        errors += _threshold_problems(f"targets[{i}]", t, thresholds, timeout)
        base = {k: getattr(t, k) for k in _TargetBase.model_fields}
        junk = d.junk_folders if t.junk_folders is None else t.junk_folders
        expect = _merge(d.expect, t.expect)
        if expect.placement == "junk" and not junk:
            errors.append(
                f'targets[{i}].expect.placement: "junk" needs at least one junk_folders entry'
            )
        targets.append(Target(**base, timeout=timeout, thresholds=thresholds, expect=expect,
            interval=d.interval if t.interval is None else t.interval,
            jitter=d.jitter if t.jitter is None else t.jitter, junk_folders=junk))  # fmt: skip
    return Config(instance=cin.instance, tag_secret=cin.tag_secret, defaults=d, targets=targets,
                  warnings=warnings)  # fmt: skip


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate already-parsed YAML; relative paths are taken from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {_kind(data)}")
    ctx: dict[str, Any] = {"base_dir": Path(base_dir), "errors": [], "warnings": []}
    errors: list[str] = ctx["errors"]
    prepared = _prepare(data, os.environ if environ is None else environ, ctx)
    config = None
    try:
        cin = _ConfigIn.model_validate(prepared, context={"base_dir": ctx["base_dir"]})
        config = _resolve(cin, ctx["warnings"], errors)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            errors += _translate(e)
    if errors or config is None:
        raise ConfigError(sorted(dict.fromkeys(errors), key=_order)) from None
    return config


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML config file at ``path``; ConfigError lists every problem."""
    p, problem = Path(path), None
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as e:
        problem = f"{p}: cannot read config file: {e.strerror or e}"
    except UnicodeDecodeError:
        problem = f"{p}: not UTF-8 text"
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = f"{p}{at}: invalid YAML: {e.problem or e.context}"
    except yaml.YAMLError:
        problem = f"{p}: invalid YAML"
    if problem:
        # Raised outside the except block: YAML's own exception quotes the offending line,
        # which may hold a secret, and must not ride along as __context__.
        raise ConfigError(problem, file=p)
    try:
        return parse_config(
            {} if data is None else data, base_dir=p.absolute().parent, environ=environ
        )
    except ConfigError as e:
        e.file = p
        raise


def redacted_dict(config: Config) -> dict[str, Any]:
    """The config as plain data for display, every secret shown as "<secret>"."""
    return config.model_dump(mode="json", exclude={"warnings"})
