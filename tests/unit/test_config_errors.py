"""Configuration errors all at once (issue 12): cross-field checks, wording, YAML marks, JSON output."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

from probe.config import ConfigError, load_config, parse_config, parse_duration, split_problem
from probe.config.messages import error_order
from relayprobe.once import run_once
from relayprobe.validate import run_validate

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "config"
MIXED = FIX / "invalid-field-and-threshold.yml"
GOOD = FIX / "good-full.yml"
ENV = {
    "T": "tok",
    "RELAYPROBE_TAG_SECRET": "tag-secret-from-env-0123",
    "CERT_PASSPHRASE": "cert-pass",
    "IMAP_TOKEN": "imap-token",
}
TAG = {"TAG": "0123456789abcdef"}
#: The two kinds the issue is about: a field error in targets[0], a contradiction in targets[1].
FIELD_ERROR = {"path": "targets[0].smtp.port", "message": "must be at most 65535, got 70000"}
CROSS_FIELD = {
    "path": "targets[1].thresholds.warning",
    "message": "10m must not exceed critical 6m",
}
DURATION_HINT = 'use seconds (300) or units like "30s", "5m", "1h30m", "250ms"'
BOTH = "set either tenant_id or authority, not both (authority already names the tenant)"


def _relayprobe(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it; a bad config never gets as far as the network."""
    return subprocess.run(
        [sys.executable, "-m", "relayprobe", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **ENV},
        timeout=60,
    )


def _target(name: str = "t", **over: Any) -> dict[str, Any]:
    return {
        "name": name,
        "smtp": {"host": "127.0.0.1", "security": "none"},
        "mail_from": "a@example.test",
        "rcpt_to": "b@example.test",
        "mailbox": {
            "host": "127.0.0.1",
            "auth": {"method": "token", "username": "b", "token": "${TAG}"},
        },
        **over,
    }


def _errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"tag_secret": "${TAG}", **data}, base_dir=FIX, environ=TAG)
    return info.value.errors


# Cross-field checks alongside field errors


def test_load_config_reports_field_and_cross_field_errors_together() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(MIXED, environ=ENV)
    lines = info.value.errors
    assert "targets[0].smtp.port: must be at most 65535, got 70000" in lines
    assert "targets[1].thresholds.warning: 10m must not exceed critical 6m" in lines
    assert lines == sorted(lines, key=error_order)


def test_a_top_level_field_error_does_not_hide_cross_field_checks() -> None:
    thresholds = {"warning": "10m", "critical": "5m"}
    errors = _errors({"instance": "bad name", "targets": [_target(thresholds=thresholds)]})
    assert errors == [
        'instance: invalid name "bad name": use 1-63 letters, digits, "_", "." or "-", '
        "starting with a letter or digit",
        "targets[0].thresholds.warning: 10m must not exceed critical 5m",
    ]


def test_a_target_whose_own_fields_failed_is_not_cross_checked() -> None:
    bad = _target("a", thresholds={"warning": "10m", "critical": "5m"}, mail_from="nope")
    errors = _errors({"targets": [bad]})
    assert errors == [
        'targets[0].mail_from: invalid address "nope": write a bare address like probe@contoso.com'
    ]


def test_a_broken_default_skips_only_the_checks_that_inherit_it() -> None:
    """defaults.timeout failed: a target inheriting it is not compared with a stand-in timeout,
    a target with its own timeout is; the rest of defaults (thresholds) still applies."""
    errors = _errors(
        {
            "defaults": {"timeout": "soon", "thresholds": {"critical": "10m"}},
            "targets": [_target("inherits"), _target("own", timeout="5m")],
        }
    )
    assert errors == [
        f'defaults.timeout: invalid duration "soon": {DURATION_HINT}',
        "targets[1].thresholds.critical: 10m (from defaults) must not exceed timeout 5m; "
        "a later arrival is a timeout",
    ]


def test_broken_default_thresholds_are_not_guessed_unless_the_target_sets_both() -> None:
    partial = _target("partial", thresholds={"warning": "10m"})
    full = _target("full", thresholds={"warning": "10m", "critical": "5m"})
    errors = _errors({"defaults": {"thresholds": {"critical": "x"}}, "targets": [partial, full]})
    assert errors == [
        f'defaults.thresholds.critical: invalid duration "x": {DURATION_HINT}',
        "targets[1].thresholds.warning: 10m must not exceed critical 5m",
    ]


def test_defaults_that_are_no_mapping_skip_the_cross_field_checks() -> None:
    errors = _errors({"defaults": [], "targets": [_target(thresholds={"warning": "2m"})]})
    assert errors == ["defaults: expected a mapping, got a list"]


def test_a_valid_config_resolves_as_before() -> None:
    c = parse_config(
        {
            "tag_secret": "${TAG}",
            "defaults": {"timeout": "10m", "thresholds": {"warning": "1m"}},
            "targets": [_target(thresholds={"critical": "5m"}, junk_folders=["Spam"])],
        },
        base_dir=FIX,
        environ=TAG,
    )
    t = c.targets[0]
    assert (t.timeout, t.thresholds.warning, t.thresholds.critical) == (600.0, 60.0, 300.0)
    assert (t.interval, t.jitter, t.junk_folders) == (300.0, 15.0, ["Spam"])


# tenant_id together with authority


def _oauth(**over: Any) -> dict[str, Any]:
    return {
        "method": "oauth2",
        "username": "a@example.test",
        "client_id": "c",
        "client_secret": "${TAG}",
        **over,
    }


def test_tenant_id_and_authority_together_is_one_error_on_the_auth_block() -> None:
    auth = _oauth(tenant_id="contoso.com", authority="https://login.microsoftonline.us/contoso.com")
    t = _target(smtp={"host": "127.0.0.1", "auth": auth})
    assert _errors({"targets": [t]}) == [f"targets[0].smtp.auth: {BOTH}"]


def test_tenant_id_or_authority_alone_is_fine() -> None:
    for one in ({"tenant_id": "contoso.com"}, {"authority": "https://login.example.test/t"}):
        t = _target(smtp={"host": "127.0.0.1", "auth": _oauth(**one)})
        c = parse_config({"tag_secret": "${TAG}", "targets": [t]}, base_dir=FIX, environ=TAG)
        assert c.targets[0].smtp.auth is not None


def test_tenant_id_and_authority_error_sits_with_the_other_auth_errors() -> None:
    auth = _oauth(tenant_id="t", authority="https://login.example.test/t", thumbprint="00" * 20)
    t = _target(smtp={"host": "127.0.0.1", "auth": auth})
    assert _errors({"targets": [t]}) == [
        f"targets[0].smtp.auth: {BOTH}",
        "targets[0].smtp.auth.thumbprint: only used with certificate_file",
    ]


# Negative durations


@pytest.mark.parametrize("value", ["-5s", "-5", "-1h30m", " -250ms", "-1.5m"])
def test_negative_duration_says_negative(value: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == f'invalid duration "{value}": must not be negative'


@pytest.mark.parametrize("value", ["--5s", "-", "-5 min", "-m"])
def test_a_minus_before_no_duration_still_gets_the_syntax_hint(value: str) -> None:
    with pytest.raises(ValueError, match="use seconds"):
        parse_duration(value)


def test_negative_timeout_in_a_config_says_negative() -> None:
    assert _errors({"targets": [_target(timeout="-5s")]}) == [
        'targets[0].timeout: invalid duration "-5s": must not be negative'
    ]


# YAML marks


def test_unterminated_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    secret = "kP3-unterminated-9z"
    (tmp_path / "c.yml").write_text(f"instance: a\ntag_secret: '{secret}\ntargets: []\n\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yml")
    assert info.value.errors == [
        f"{tmp_path}/c.yml:2:13: invalid YAML: found unexpected end of stream while scanning "
        "a quoted scalar"
    ]
    # YAML's exception quotes the line (here a secret): never chained, never shown.
    exc = info.value
    assert exc.__cause__ is None and exc.__context__ is None
    assert secret not in "".join(traceback.format_exception(exc))


def test_an_error_before_the_end_keeps_the_problem_mark(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text('a: "x\\q"\nb: 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.yml")
    assert info.value.errors == [
        f"{tmp_path}/c.yml:1:7: invalid YAML: found unknown escape character 'q'"
    ]


# "path: message" split for JSON


@pytest.mark.parametrize(
    ("line", "path", "message"),
    [
        ("targets[0].smtp.port: must be at most 65535", "targets[0].smtp.port",
         "must be at most 65535"),
        ('tag_secret_file: cannot read "/x": No such file', "tag_secret_file",
         'cannot read "/x": No such file'),
        ("expected a mapping at the top level, got a list", None,
         "expected a mapping at the top level, got a list"),
        ('target "x" not found; configured: a, b', None, 'target "x" not found; configured: a, b'),
        ("/etc/c.yml:5:14: invalid YAML: duplicate key", None,
         "/etc/c.yml:5:14: invalid YAML: duplicate key"),
    ],
)  # fmt: skip
def test_split_problem(line: str, path: str | None, message: str) -> None:
    assert split_problem(line, Path("/etc/c.yml")) == {"path": path, "message": message}


def test_a_file_level_problem_without_colon_after_the_file_has_no_path() -> None:
    line = "/etc/c.yml: cannot read config file: No such file or directory"
    assert split_problem(line, Path("/etc/c.yml")) == {"path": None, "message": line}


# The command line


def test_validate_lists_both_kinds_of_error() -> None:
    proc = _relayprobe("validate", MIXED)
    assert proc.returncode == 3, proc.stderr
    assert f"{MIXED}: 5 error(s)" in proc.stderr
    assert f"  {FIELD_ERROR['path']}: {FIELD_ERROR['message']}" in proc.stderr.splitlines()
    assert f"  {CROSS_FIELD['path']}: {CROSS_FIELD['message']}" in proc.stderr.splitlines()
    assert proc.stdout == ""


def test_validate_json_on_a_bad_config() -> None:
    proc = _relayprobe("validate", "--config.file", MIXED, "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"valid", "errors", "warnings", "targets"}
    assert doc["valid"] is False and doc["targets"] == [] and doc["warnings"] == []
    assert FIELD_ERROR in doc["errors"] and CROSS_FIELD in doc["errors"]
    assert len(doc["errors"]) == 5


def test_once_json_on_a_bad_config_prints_the_errors_and_exits_3() -> None:
    proc = _relayprobe("once", "--config", MIXED, "--json")
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["results"] == [] and doc["warnings"] == []
    assert FIELD_ERROR in doc["errors"] and CROSS_FIELD in doc["errors"]
    assert [e["path"] for e in doc["errors"]][:2] == ["defaults.interval", FIELD_ERROR["path"]]


def test_validate_json_on_a_good_config() -> None:
    proc = _relayprobe("validate", "--json", GOOD)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    resolved = doc.pop("config")
    assert doc == {
        "valid": True,
        "errors": [],
        "warnings": [],
        "targets": ["m365-submission", "connector"],
    }
    assert [t["name"] for t in resolved["targets"]] == doc["targets"]
    assert "<secret>" in proc.stdout  # every secret shown redacted
    assert not any(value in proc.stdout for value in ("tag-secret-from-env-0123", "cert-pass"))


@pytest.mark.parametrize("form", [["CONFIG"], ["--config", "CONFIG"], ["--config.file=CONFIG"]])
def test_validate_accepts_the_positional_and_the_option(form: list[str]) -> None:
    proc = _relayprobe("validate", *(a.replace("CONFIG", str(GOOD)) for a in form))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{GOOD}: ok (2 target(s): m365-submission, connector)\n"


@pytest.mark.parametrize("args", [[], [str(GOOD), "--config", str(GOOD)]])
def test_validate_needs_exactly_one_config(args: list[str]) -> None:
    proc = _relayprobe("validate", *args)
    assert proc.returncode == 3 and "usage: relayprobe validate" in proc.stderr


def test_once_text_mode_on_a_bad_config_is_unchanged() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_once(str(MIXED), targets=None, as_json=False, out=out, err=err) == 3
    assert out.getvalue() == ""
    assert f"relayprobe: {FIELD_ERROR['path']}: {FIELD_ERROR['message']}\n" in err.getvalue()


def test_once_json_reports_an_unknown_target_with_the_configs_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selection fails before any probe runs, so a good config is safe here (no network)."""
    monkeypatch.setenv("TAG", TAG["TAG"])
    data = {"tag_secret": "inline-tag-secret-0123", "targets": [_target("a")]}
    (tmp_path / "c.yml").write_text(json.dumps(data))  # JSON is YAML
    out, err = io.StringIO(), io.StringIO()
    code = run_once(str(tmp_path / "c.yml"), targets=["nope"], as_json=True, out=out, err=err)
    assert code == 3 and err.getvalue() == ""
    assert json.loads(out.getvalue()) == {
        "results": [],
        "errors": [{"path": None, "message": 'target "nope" not found; configured: a'}],
        "warnings": [
            {
                "path": "tag_secret",
                "message": "inline secret; prefer tag_secret_file or ${ENV}",
            }
        ],
    }


def test_json_reports_warnings_of_a_config_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAG", TAG["TAG"])
    data = {"tag_secret": "inline-tag-secret-0123", "targets": [_target("a", timeout="-1s")]}
    (tmp_path / "c.yml").write_text(json.dumps(data))
    out = io.StringIO()
    assert run_validate(str(tmp_path / "c.yml"), as_json=True, out=out) == 3
    doc = json.loads(out.getvalue())
    assert doc["errors"] == [
        {"path": "targets[0].timeout", "message": 'invalid duration "-1s": must not be negative'}
    ]
    assert doc["warnings"] == [
        {"path": "tag_secret", "message": "inline secret; prefer tag_secret_file or ${ENV}"}
    ]
