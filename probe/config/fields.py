"""Config field types and their validators, each problem worded for the person editing the YAML."""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
import ssl
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from probe.config.durations import parse_duration
from probe.config.secrets import resolve_path


def field_error(msg: str, problems: tuple[tuple[str, str], ...] = ()) -> PydanticCustomError:
    # "{msg}" as the template: a value holding braces must not be read as a placeholder.
    return PydanticCustomError("relayprobe", "{msg}", {"msg": msg, "problems": problems})


def checked(fn: Any) -> Any:
    """Turn a validator's ValueError into our error type, keeping its text as the message."""

    @functools.wraps(fn)  # keeps the signature: pydantic passes ValidationInfo when fn takes it
    def wrapped(v: Any, *args: Any) -> Any:
        try:
            return fn(v, *args)
        except ValueError as e:
            raise field_error(str(e)) from None

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


def no_bool(v: Any) -> Any:
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


def _new_file(v: Path, info: ValidationInfo) -> Path:
    """A file the probe writes (it may not exist yet); its directory must."""
    p = resolve_path(v, (info.context or {}).get("base_dir"))
    if not p.parent.is_dir():
        raise ValueError(f'directory "{p.parent}" of "{p.name}" does not exist; create it first')
    if p.is_dir():
        raise ValueError(f'"{p}" is a directory; give a file name')
    return p


def _ca_bundle(v: Path) -> Path:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=v)
    except (ssl.SSLError, ValueError):
        raise ValueError(f'"{v}" holds no PEM CA certificate') from None
    return v


def sha1_thumbprint(v: str) -> str:
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


Name = Annotated[str, AfterValidator(checked(_name))]
Address = Annotated[str, AfterValidator(checked(_address))]
Host = Annotated[str, AfterValidator(checked(_host))]
Text = Annotated[str, Field(min_length=1)]
Port = Annotated[int, BeforeValidator(checked(no_bool)), Field(ge=1, le=65535)]
Duration = Annotated[float, BeforeValidator(checked(_duration))]
Positive = Annotated[float, BeforeValidator(checked(_duration)), AfterValidator(checked(_positive))]
File = Annotated[Path, AfterValidator(checked(_readable))]
NewFile = Annotated[Path, AfterValidator(checked(_new_file))]
CaFile = Annotated[File, AfterValidator(checked(_ca_bundle))]
_one_or_many = BeforeValidator(lambda v: [v] if isinstance(v, str) else v)


def results_field(key: str) -> Any:
    return Annotated[list[str] | None, _one_or_many, AfterValidator(checked(_opt(_results(key))))]


def _opt(fn: Any) -> Any:
    return lambda v: None if v is None else fn(v)


def parse_dns_server(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (ip, port 53 by default); ValueError says why."""
    import ipaddress

    text = text.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f'"{text}": expected [IPv6]:PORT')
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f'"{text}": not an IP address (IP or IP:PORT)') from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{text}": port must be 1-65535')
    return host, int(port)


# A DNS server for the posture checks (docs/configuration.md#posture).
DnsServer = Annotated[str, AfterValidator(checked(lambda v: parse_dns_server(v) and v.strip()))]
