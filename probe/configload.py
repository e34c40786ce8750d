"""Config loading steps: duplicate-key-safe YAML, secrets and presets resolved, defaults merged."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

import yaml

from probe.configmodel import Auth, Config, Target, Thresholds, _ConfigIn, _TargetBase, _TargetIn
from probe.durations import format_duration
from probe.presets import apply_preset
from probe.secrets import resolve_secrets


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
