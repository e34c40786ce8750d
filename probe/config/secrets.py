"""Opaque secrets and their config indirection: inline, `x_file` (a path) or `${ENV_VAR}`."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError, core_schema

REDACTED = "<secret>"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A secret file is a few hundred bytes at most; a bigger one is almost surely the wrong path.
_MAX_FILE_BYTES = 64 * 1024


class Secret:
    """A string that never shows itself: str(), repr(), format() and serialisation give "<secret>"."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def get(self) -> str:
        """The secret itself, for the one place that needs it (AUTH, token request, HMAC)."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda _v: REDACTED, when_used="always"
            ),
        )

    @classmethod
    def _validate(cls, v: object) -> Secret:
        if isinstance(v, Secret):
            return v
        if isinstance(v, str):
            return cls(v)
        # Never echo the input: it may be the secret itself.
        raise PydanticCustomError("relayprobe", "{msg}", {"msg": "expected a string"})


def resolve_path(value: str | Path, base_dir: Path | None) -> Path:
    """A config path: `~` expanded, relative paths taken from the config file's directory."""
    p = Path(value).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


def _read_secret_file(p: Path) -> str:
    """Read a secret file, stripping one trailing newline; ValueError texts never hold the content."""
    try:
        with open(p, "rb") as f:
            raw = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ValueError(f'cannot read "{p}": {e.strerror or e}') from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ValueError(f'"{p}" is larger than 64 KiB; is that the right file?')
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f'"{p}" is not UTF-8 text') from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f'"{p}" is empty')
    return text


def resolve_secrets(
    mapping: Mapping[str, Any],
    fields: tuple[str, ...],
    path: str,
    *,
    base_dir: Path | None,
    environ: Mapping[str, str],
    errors: list[str],
    warnings: list[str],
    min_bytes: int = 1,
) -> dict[str, Any]:
    """Return a copy of ``mapping`` with each secret field `x` / `x_file` resolved into ``Secret(x)``.

    Problems go to ``errors`` as "path: message" (a field that failed becomes a placeholder Secret,
    so validation does not add a misleading "missing required key"); inline secrets add a warning.
    """
    out = dict(mapping)
    prefix = f"{path}." if path else ""
    for name in fields:
        fname = f"{name}_file"
        inline, from_file = out.get(name), out.get(fname)
        out.pop(fname, None)
        if inline is None and from_file is None:
            out.pop(name, None)  # `x: null` means unset; validation reports it if required
            continue
        where = f"{prefix}{fname}" if from_file is not None else f"{prefix}{name}"
        try:
            if inline is not None and from_file is not None:
                where = f"{prefix}{name}"
                raise ValueError(f"set either {name} or {fname}, not both")
            if from_file is not None:
                if not isinstance(from_file, str):
                    raise ValueError("expected a path string")
                value = _read_secret_file(resolve_path(from_file, base_dir))
            elif not isinstance(inline, str):
                raise ValueError("expected a string")
            elif m := _ENV_REF.fullmatch(inline):
                var = m.group(1)
                if var not in environ:
                    raise ValueError(f'environment variable "{var}" is not set')
                value = environ[var]
                if not value:
                    raise ValueError(f'environment variable "{var}" is empty')
            elif inline.startswith("${"):
                raise ValueError('not a valid environment reference; write "${NAME}"')
            else:
                if not inline:
                    raise ValueError("must not be empty")
                value = inline
                warnings.append(f"{prefix}{name}: inline secret; prefer {fname} or ${{ENV}}")
            size = len(value.encode())
            if size < min_bytes:
                raise ValueError(f"too short: {size} bytes, at least {min_bytes} required")
        except ValueError as e:
            errors.append(f"{where}: {e}")
            value = ""
        out[name] = Secret(value)
    return out
