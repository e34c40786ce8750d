"""Pydantic's validation errors rewritten as "path: message" lines, with "did you mean" hints."""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from probe.config.model import ConfigIn

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "path_type": "a path string",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}  # fmt: skip
_HINTS = {
    "tls_mode": "security",
    "tls": "security",
    "ssl": "security",
    "encryption": "security",
    "user": "username",
    "login": "username",
    "server": "host",
    "hostname": "host",
    "from": "mail_from",
    "sender": "mail_from",
    "to": "rcpt_to",
    "recipient": "rcpt_to",
    "secret": "tag_secret",
    "imap": "mailbox",
    "submission": "smtp",
}


def kind_of(v: Any) -> str:
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
    return kind_of(v) if isinstance(v, Mapping | list | tuple) else type(v).__name__


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
    model: type[BaseModel] | None = ConfigIn
    for part in loc:
        if isinstance(part, str):
            info = model.model_fields.get(part) if model else None
            model = _model(info.annotation) if info else None
    if model is None:
        return []
    return list(model.model_fields) + [f"{f}_file" for f in model._secret_fields]


def translate(e: Any) -> list[str]:
    loc, kind, ctx, got = tuple(e["loc"]), e["type"], e.get("ctx") or {}, e.get("input")
    where = _path(loc)
    if kind == "relayprobe":
        if ctx.get("problems"):
            # A problem with field "" belongs to the model itself (several of its keys at once).
            return [f"{'.'.join(x for x in (where, f) if x)}: {m}" for f, m in ctx["problems"]]
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
        msg = f"expected {what}, got {kind_of(got) if what.startswith('a ') else _show(got)}"
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


def error_order(line: str) -> list[tuple[int, Any]]:
    path = line.split(": ", 1)[0]
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\[\]]+", path) if p]


# A config path as _path writes it: no spaces, quotes or colons (prose and file:line:col have some).
_CONFIG_PATH = re.compile(r"[^\s:\"']+")


def split_problem(line: str, file: Path | None = None) -> dict[str, str | None]:
    """One "path: message" line as {"path", "message"}; path None when the line has no config
    path (a problem of the file itself, starting with ``file``, or of the top level)."""
    path, sep, message = line.partition(": ")
    in_file = file is not None and line.startswith(f"{file}:")
    if not sep or in_file or not _CONFIG_PATH.fullmatch(path):
        return {"path": None, "message": line}
    return {"path": path, "message": message}
