"""Loading a config: duplicate-key-safe YAML, secrets and presets resolved, defaults merged, every error."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from probe.config.durations import format_duration
from probe.config.messages import error_order, kind_of, translate
from probe.config.model import (
    Auth,
    Config,
    ConfigError,
    ConfigIn,
    Target,
    TargetBase,
    TargetIn,
    Thresholds,
)
from probe.config.presets import apply_preset
from probe.config.secrets import resolve_secrets


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
        # Relay-mode presets (probe/config/presets.py): fill defaults, report contradictions.
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


def _threshold_problems(p: str, t: TargetIn, th: Thresholds, timeout: float) -> list[str]:
    def own(key: str, model: Any) -> str:
        return "" if model is not None and key in model.model_fields_set else " (from defaults)"

    w, c = th.warning, th.critical
    ws, cs, ts = own("warning", t.thresholds), own("critical", t.thresholds), own("timeout", t)
    out = []
    if w is not None and c is not None and w > c:
        out.append(
            f"{p}.thresholds.warning: {format_duration(w)}{ws} must not exceed critical "
            f"{format_duration(c)}{cs}"
        )
    key, top, src = ("critical", c, cs) if c is not None else ("warning", w, ws)
    if top is not None and top > timeout:
        out.append(
            f"{p}.thresholds.{key}: {format_duration(top)}{src} must not exceed timeout "
            f"{format_duration(timeout)}{ts}; a later arrival is a timeout"
        )
    return out


def _resolve(cin: ConfigIn, warnings: list[str], errors: list[str]) -> Config:
    d, targets = cin.defaults, []
    for i, t in enumerate(cin.targets):
        timeout = d.timeout if t.timeout is None else t.timeout
        thresholds = _merge(d.thresholds, t.thresholds)
        errors += _threshold_problems(f"targets[{i}]", t, thresholds, timeout)
        base = {k: getattr(t, k) for k in TargetBase.model_fields}
        junk = d.junk_folders if t.junk_folders is None else t.junk_folders
        expect = _merge(d.expect, t.expect)
        if expect.placement == "junk" and not junk:
            errors.append(
                f'targets[{i}].expect.placement: "junk" needs at least one junk_folders entry'
            )
        targets.append(
            Target(
                **base,
                timeout=timeout,
                thresholds=thresholds,
                expect=expect,
                interval=d.interval if t.interval is None else t.interval,
                jitter=d.jitter if t.jitter is None else t.jitter,
                junk_folders=junk,
            )
        )
    return Config(
        instance=cin.instance,
        tag_secret=cin.tag_secret,
        defaults=d,
        targets=targets,
        warnings=warnings,
    )


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate already-parsed YAML; relative paths are taken from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {kind_of(data)}")
    ctx: dict[str, Any] = {"base_dir": Path(base_dir), "errors": [], "warnings": []}
    errors: list[str] = ctx["errors"]
    prepared = _prepare(data, os.environ if environ is None else environ, ctx)
    config = None
    try:
        cin = ConfigIn.model_validate(prepared, context={"base_dir": ctx["base_dir"]})
        config = _resolve(cin, ctx["warnings"], errors)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            errors += translate(e)
    if errors or config is None:
        raise ConfigError(sorted(dict.fromkeys(errors), key=error_order)) from None
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
