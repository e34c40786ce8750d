"""The relayprobe configuration: YAML in, typed and validated models out, every problem reported."""

# The public facade: the models live in probe.configmodel (field types in probe.configtypes),
# the loading steps in probe.configload and the error wording in probe.configerrors.

from __future__ import annotations

import os
import socket  # noqa: F401 - tests patch probe.config.socket.gethostname (default_instance)
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from probe.configerrors import _kind, _order, _translate
from probe.configload import _Loader, _prepare, _resolve
from probe.configmodel import (
    Auth,
    Config,
    ConfigError,
    Defaults,
    Expect,
    Mailbox,
    Smtp,
    Target,
    Thresholds,
    _ConfigIn,
)

# Public names that lived here before the split, kept importable from probe.config.
from probe.configmodel import default_instance as default_instance
from probe.configtypes import Address as Address
from probe.configtypes import CaFile as CaFile
from probe.configtypes import Duration as Duration
from probe.configtypes import File as File
from probe.configtypes import Host as Host
from probe.configtypes import Name as Name
from probe.configtypes import Port as Port
from probe.configtypes import Positive as Positive
from probe.configtypes import Text as Text
from probe.durations import parse_duration
from probe.secrets import Secret

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
