"""Loading a config: duplicate-key-safe YAML, secrets and presets resolved, defaults merged, every error."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from probe.config.clouds import apply_cloud, cloud_of
from probe.config.durations import format_duration
from probe.config.messages import error_order, kind_of, translate
from probe.config.model import (
    Auth,
    Config,
    ConfigError,
    ConfigIn,
    Defaults,
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
    defaults = out.get("defaults")
    default_cloud = defaults.get("cloud") if isinstance(defaults, Mapping) else None
    for i, t in enumerate(out["targets"]):
        if not isinstance(t, dict):
            continue
        # The target's cloud (its own or defaults.cloud), also in its auth blocks
        # (probe/config/clouds.py): the presets' hosts and the authority follow it.
        t = out["targets"][i] = apply_cloud(t, default_cloud)
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
        # Relay-mode presets (probe/config/presets.py): fill defaults, report contradictions.
        # After the secrets, so a preset can tell a missing password from a failed one.
        out["targets"][i] = apply_preset(t, f"targets[{i}]", ctx["errors"], ctx["warnings"])
    return out


def _merge(base: Any, own: Any) -> Any:
    """Defaults merged key by key: what the target sets explicitly wins."""
    return (
        base
        if own is None
        else base.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})
    )


def _threshold_problems(p: str, t: TargetIn, th: Thresholds, timeout: float | None) -> list[str]:
    """Thresholds against each other and against the timeout (None: unknown, not compared)."""

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
    if top is not None and timeout is not None and top > timeout:
        out.append(
            f"{p}.thresholds.{key}: {format_duration(top)}{src} must not exceed timeout "
            f"{format_duration(timeout)}{ts}; a later arrival is a timeout"
        )
    return out


def _inherited(t: TargetIn, d: Defaults, gaps: frozenset[str], key: str) -> Any:
    """What target ``t`` ends up with for ``key``: its own value, or the default's (merged key by
    key for expect, thresholds and posture); None when that depends on a ``defaults`` key that failed."""
    own = getattr(t, key)
    if key in ("expect", "thresholds", "posture"):
        if key not in gaps:
            return _merge(getattr(d, key), own)
        # Without a usable default only a target that sets every key knows its own value.
        complete = own is not None and own.model_fields_set >= set(type(own).model_fields)
        return own if complete else None
    if own is not None:
        return own
    return None if key in gaps else getattr(d, key)


def _target_problems(
    i: int, t: TargetIn, d: Defaults, gaps: frozenset[str] = frozenset()
) -> list[str]:
    """The cross-field checks of one target, run on what it inherits from ``defaults``.

    ``gaps`` names the keys of ``defaults`` that failed validation: a check that would need one
    is skipped rather than run on a stand-in value (which could report a false contradiction).
    """
    p, out = f"targets[{i}]", []
    thresholds = _inherited(t, d, gaps, "thresholds")
    if thresholds is not None:
        out += _threshold_problems(p, t, thresholds, _inherited(t, d, gaps, "timeout"))
    expect, junk = _inherited(t, d, gaps, "expect"), _inherited(t, d, gaps, "junk_folders")
    if expect is not None and expect.placement == "junk" and junk is not None and not junk:
        out.append(f'{p}.expect.placement: "junk" needs at least one junk_folders entry')
    trace = _inherited(t, d, gaps, "trace")
    if trace is not None and trace.enabled:
        out += _trace_problems(p, t)
    return out


def _trace_problems(p: str, t: TargetIn) -> list[str]:
    """Message trace is Graph, app-only and global-cloud only (docs/configuration.md)."""
    out = []
    if t.cloud != "global":
        out.append(
            f"{p}.trace.enabled: Microsoft's message trace API exists in the global cloud only, "
            f'not in cloud "{t.cloud}"; turn trace off for this target'
        )
    a = t.mailbox.auth
    if a.method != "oauth2" or a.flow != "client_credentials":
        out.append(
            f"{p}.trace.enabled: message trace uses the mailbox's app-only OAuth client "
            '(mailbox.auth method "oauth2", flow "client_credentials") with '
            "ExchangeMessageTrace.Read.All"
        )
    return out


def _resolve(cin: ConfigIn, warnings: list[str], errors: list[str]) -> Config:
    d, targets = cin.defaults, []
    if "late_grace" in d.model_fields_set:
        # Kept so older configs still load; own probe mail that comes after its timeout is always
        # counted as late and deleted, however late (docs/configuration.md, "defaults").
        warnings.append(
            "defaults.late_grace has no effect and can be removed: a probe that arrives after its "
            "timeout is always counted as late and deleted"
        )
    inheritable = set(Target.model_fields) - set(TargetBase.model_fields)
    for i, t in enumerate(cin.targets):
        errors += _target_problems(i, t, d)
        base = {k: getattr(t, k) for k in TargetBase.model_fields}
        targets.append(Target(**base, **{k: _inherited(t, d, frozenset(), k) for k in inheritable}))
    return Config(
        instance=cin.instance,
        tag_secret=cin.tag_secret,
        defaults=d,
        targets=targets,
        warnings=warnings,
    )


def _usable_defaults(
    data: Mapping[str, Any], context: dict[str, Any]
) -> tuple[Defaults, frozenset[str]] | None:
    """(Defaults, gaps) from the keys of ``defaults`` that validate on their own; None if it is
    not even a mapping. Used when the config as a whole failed, for the cross-field checks."""
    if "defaults" not in data:
        return Defaults(), frozenset()
    raw = data["defaults"]
    if not isinstance(raw, Mapping):
        return None
    good: dict[Any, Any] = {}
    gaps: set[str] = set()
    for key, value in raw.items():
        try:
            Defaults.model_validate({key: value}, context=context)
        except ValidationError:
            gaps.add(str(key))
        else:
            good[key] = value
    return Defaults.model_validate(good, context=context), frozenset(gaps)


def _partial_problems(data: Mapping[str, Any], context: dict[str, Any]) -> list[str]:
    """Cross-field problems of the targets that validated on their own, when something else in
    the config did not: a bad port in one target must not hide a contradiction in another."""
    usable, targets = _usable_defaults(data, context), data.get("targets")
    if usable is None or not isinstance(targets, list):
        return []
    d, gaps = usable
    out: list[str] = []
    for i, raw in enumerate(targets):
        try:
            t = TargetIn.model_validate(raw, context=context)
        except ValidationError:
            continue  # its own field errors are reported already; its checks would guess
        out += _target_problems(i, t, d, gaps)
    return out


def parse_config(
    data: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate already-parsed YAML; relative paths are taken from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {kind_of(data)}")
    ctx: dict[str, Any] = {"base_dir": Path(base_dir), "errors": [], "warnings": []}
    errors: list[str] = ctx["errors"]
    prepared = _prepare(data, os.environ if environ is None else environ, ctx)
    context, config = {"base_dir": ctx["base_dir"]}, None
    try:
        cin = ConfigIn.model_validate(prepared, context=context)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            errors += translate(e)
        errors += _partial_problems(prepared, context)
    else:
        config = _resolve(cin, ctx["warnings"], errors)
    if errors or config is None:
        raise ConfigError(
            sorted(dict.fromkeys(errors), key=error_order), warnings=ctx["warnings"]
        ) from None
    return config


def _yaml_problem(e: yaml.MarkedYAMLError, text: str) -> str:
    """ ":LINE:COL: invalid YAML: ..." for a parser error, pointing where the fix is needed."""
    mark, what = e.problem_mark or e.context_mark, e.problem or e.context
    at_end = e.problem_mark is not None and not text[e.problem_mark.index :].strip()
    if at_end and e.context_mark is not None and e.context:
        # The parser ran to the end of the file looking for a closing quote or bracket: the end
        # is no help, the place where the unclosed thing opened is (the context mark).
        mark, what = e.context_mark, f"{e.problem} {e.context}"
    at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
    return f"{at}: invalid YAML: {what}"


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the YAML config file at ``path``; ConfigError lists every problem."""
    p, problem, text = Path(path), None, ""
    try:
        text = p.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_Loader)
    except OSError as e:
        problem = f"{p}: cannot read config file: {e.strerror or e}"
    except UnicodeDecodeError:
        problem = f"{p}: not UTF-8 text"
    except yaml.MarkedYAMLError as e:
        problem = f"{p}{_yaml_problem(e, text)}"
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
    """The config as plain data for display, every secret shown as "<secret>". An oauth2 block
    shows the authority it will use: the written one, or its cloud's for tenant_id."""
    data = config.model_dump(mode="json", exclude={"warnings"})
    for target in data["targets"]:
        for side in ("smtp", "mailbox"):
            auth = target[side].get("auth")
            if auth and auth["method"] == "oauth2" and not auth["authority"]:
                auth["authority"] = cloud_of(auth["cloud"]).authority_for(auth["tenant_id"])
    return data
