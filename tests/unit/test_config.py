"""Config loading: good and invalid fixture files, secret indirection, defaults, and no secret leaks."""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import yaml

import probe.config.model
from probe.config import (
    Auth,
    Config,
    ConfigError,
    Secret,
    Smtp,
    load_config,
    parse_config,
    parse_duration,
    redacted_dict,
)
from probe.config.durations import format_duration

FIX = Path(__file__).parents[1] / "fixtures" / "config"
ENV = {
    "INBOX_PASSWORD": "inbox-pw",
    "RELAYPROBE_TAG_SECRET": "tag-secret-from-env-0123",
    "CERT_PASSPHRASE": "cert-pass",
    "IMAP_TOKEN": "imap-token",
    "T": "tok",
    "PW": "pw",
    "S": "s",
    "EMPTY": "",
}
NAME_HINT = 'use 1-63 letters, digits, "_", "." or "-", starting with a letter or digit'
DURATION_HINT = 'use seconds (300) or units like "30s", "5m", "1h30m", "250ms"'

INVALID = {
    "invalid-three-problems.yml": [
        'targets[0].mailbox.security: expected one of tls, starttls, got "ssl"',
        'targets[0].smtp.port: expected an integer, got "abc"',
        'targets[0].smtp.tls_mode: unknown key (did you mean "security"?)',
    ],
    "invalid-types.yml": [
        f'defaults.interval: invalid duration "5 min": {DURATION_HINT}',
        f"defaults.jitter: invalid duration true: {DURATION_HINT}",
        "defaults.junk_folders: expected a list, got a string",
        "defaults.timeout: invalid duration -5: must not be negative",
        "targets[0].expect.dkim: must not be empty; omit the key to skip this check",
        "targets[0].expect.max_scl: must be at most 9, got 12",
        'targets[0].expect.placement: expected one of inbox, junk, any, got "spam"',
        'targets[0].expect.spf: unknown result "pas" (did you mean "pass"?); expected pass, fail, '
        "softfail, neutral, none, temperror, permerror",
        "targets[0].mailbox.port: expected an integer, got true",
        "targets[0].smtp.helo: expected a string, got 42",
        "targets[0].smtp.port: must be at most 65535, got 70000",
        "targets[0].smtp.timeout: must be greater than 0, got 0",
        "targets[1].mailbox: expected a mapping, got a list",
        "targets[1].name: missing required key",
        "targets[1].smtp: expected a mapping, got a string",
    ],
    "invalid-names.yml": [
        f'instance: invalid name "probe eu": {NAME_HINT}',
        'targets[0].mail_from: invalid address "Probe <probe@contoso.com>": write a bare address '
        "like probe@contoso.com",
        f'targets[0].name: invalid name "m365 submission": {NAME_HINT}',
        'targets[0].rcpt_to: invalid address "probe-inbox": write a bare address like '
        "probe@contoso.com",
        'targets[0].smtp.host: invalid host "smtp.office365.com:587": put the port in port, '
        "not in host",
        'targets[2].name: duplicate name "dup" (also targets[1])',
    ],
    "invalid-auth.yml": [
        'targets[0].mailbox.auth.client_id: not used by method "password"',
        'targets[0].mailbox.auth.password: required by method "password" '
        "(set password or password_file)",
        'targets[0].smtp.auth: not allowed with security "none": never send credentials '
        "unencrypted; use starttls or tls",
        "targets[0].smtp.client_key_file: required with client_cert_file",
        'targets[1].mailbox.auth.authority: invalid value "http://login.example.test": '
        "expected an https:// URL",
        'targets[1].smtp.auth.client_id: required by method "oauth2" (set client_id)',
        "targets[1].smtp.auth.client_secret: set client_secret or certificate_file, not both",
        'targets[1].smtp.auth.tenant_id: required by method "oauth2" (or set authority)',
        "targets[1].smtp.auth.thumbprint: required with certificate_file",
        'targets[2].mailbox.auth.thumbprint: invalid thumbprint "12:34": expected the SHA-1 '
        "thumbprint, 40 hex digits",
        'targets[2].smtp.auth.token: required by method "token" (set token or token_file)',
    ],
    "invalid-files.yml": [
        f'tag_secret_file: cannot read "{FIX}/missing.secret": No such file or directory',
        "targets[0].mailbox.auth.password: set either password or password_file, not both",
        'targets[0].mailbox.ca_file: cannot read "/nonexistent/ca.pem": No such file or directory',
        f'targets[0].smtp.ca_file: "{FIX}/not-a-ca.pem" holds no PEM CA certificate',
        f'targets[0].smtp.client_cert_file: cannot read "{FIX}/missing.crt": '
        "No such file or directory",
        f'targets[0].smtp.client_key_file: cannot read "{FIX}": Is a directory',
    ],
    "invalid-secrets.yml": [
        'tag_secret: environment variable "UNSET_TAG_SECRET" is not set',
        'targets[0].mailbox.auth.token: not a valid environment reference; write "${NAME}"',
        'targets[0].smtp.auth.password: environment variable "EMPTY" is empty',
        "targets[1].mailbox.auth.token_file: expected a path string",
        "targets[1].smtp.auth.password: expected a string",
    ],
    "invalid-short-secret.yml": [
        "tag_secret: too short: 5 bytes, at least 16 required",
        "targets: must not be empty",
        "warnings: unknown key",
    ],
    "invalid-thresholds.yml": [
        "targets[0].thresholds.warning: 10m (from defaults) must not exceed timeout 5m "
        "(from defaults); a later arrival is a timeout",
        'targets[1].expect.placement: "junk" needs at least one junk_folders entry',
        "targets[1].thresholds.warning: 10m (from defaults) must not exceed critical 5m",
    ],
    "invalid-unknown-keys.yml": [
        'defaults.intervall: unknown key (did you mean "interval"?)',
        "targets[0].expect.spf_result: unknown key",
        "targets[0].mailbox.foo: unknown key",
        'targets[0].smtp.auth.pasword_file: unknown key (did you mean "password_file"?)',
        'targets[0].smtp.auth.user: unknown key (did you mean "username"?)',
        "targets[0].smtp.auth.username: missing required key",
        'targets[0].smtp.server: unknown key (did you mean "host"?)',
    ],
    "invalid-empty.yml": [
        "tag_secret: missing required key (set tag_secret_file or tag_secret)",
        "targets: missing required key",
    ],
    "invalid-top-level.yml": ["expected a mapping at the top level, got a list"],
    "invalid-yaml.yml": [
        f"{FIX}/invalid-yaml.yml:5:14: invalid YAML: expected ',' or '}}', but got ':'"
    ],
    "invalid-duplicate-key.yml": [
        f'{FIX}/invalid-duplicate-key.yml:7:7: invalid YAML: duplicate key "port"'
    ],
    "invalid-unterminated-quote.yml": [
        f"{FIX}/invalid-unterminated-quote.yml:5:16: invalid YAML: found unexpected end of stream "
        "while scanning a quoted scalar"
    ],
    "invalid-field-and-threshold.yml": [
        f'defaults.interval: invalid duration "soon": {DURATION_HINT}',
        "targets[0].smtp.port: must be at most 65535, got 70000",
        "targets[1].thresholds.critical: 6m must not exceed timeout 5m (from defaults); a later "
        "arrival is a timeout",
        "targets[1].thresholds.warning: 10m must not exceed critical 6m",
        'targets[2].expect.placement: "junk" needs at least one junk_folders entry',
    ],
    "invalid-tenant-and-authority.yml": [
        "targets[0].mailbox.auth: set either tenant_id or authority, not both (authority already "
        "names the tenant)",
        "targets[0].smtp.auth: set either tenant_id or authority, not both (authority already "
        "names the tenant)",
    ],
}


def test_every_invalid_fixture_is_in_the_table() -> None:
    assert sorted(p.name for p in FIX.glob("invalid-*.yml")) == sorted(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_reports_exact_errors(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIX / name, environ=ENV)
    assert info.value.errors == INVALID[name]
    assert str(info.value) == "\n".join(INVALID[name])
    assert info.value.file == FIX / name


def test_three_problems_give_three_lines_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIX / "invalid-three-problems.yml", environ=ENV)
    assert len(info.value.errors) == 3
    assert len(str(info.value).splitlines()) == 3


def test_missing_config_file_names_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(FIX / "nope.yml")
    assert info.value.errors == [
        f"{FIX}/nope.yml: cannot read config file: No such file or directory"
    ]


def test_good_minimal_fills_defaults() -> None:
    c = load_config(FIX / "good-minimal.yml", environ=ENV)
    t = c.target("local")
    assert c.tag_secret.get() == "fixture-tag-secret-0123456789abcdef"  # one newline stripped
    assert (t.interval, t.timeout, t.jitter, t.junk_folders) == (300.0, 300.0, 15.0, ["Junk Email"])
    assert c.defaults.late_grace == 3600.0
    assert t.smtp.port == 25 and t.smtp.timeout == 30.0 and t.smtp.auth is None
    assert (t.mailbox.port, t.mailbox.security, t.mailbox.folder) == (993, "tls", "INBOX")
    assert t.mailbox.auth.password is not None and t.mailbox.auth.password.get() == "inbox-pw"
    assert t.expect.placement == "inbox" and t.expect.spf is None
    assert t.thresholds.warning is None and t.mode == "submission"
    assert c.warnings == []


def test_good_full_resolves_every_key() -> None:
    c = load_config(FIX / "good-full.yml", environ=ENV)
    assert c.instance == "probe-eu-1"
    assert c.tag_secret.get() == "tag-secret-from-env-0123"
    sub, con = c.targets
    a = sub.smtp.auth
    assert a is not None and a.client_secret is not None
    assert a.client_secret.get() == "fixture-client-secret"
    assert sub.smtp.timeout == 45.0 and sub.timeout == 600.0 and sub.jitter == 30.0
    m = sub.mailbox.auth
    assert m.certificate_file == FIX / "client.key"
    assert m.thumbprint == "ABCDEF0123456789ABCDEF0123456789ABCDEF01"
    assert m.certificate_passphrase is not None and m.certificate_passphrase.get() == "cert-pass"
    # expect and thresholds merge key by key; the target's own keys win.
    assert sub.expect.spf == ["pass"] and sub.expect.dmarc == ["pass", "bestguesspass"]
    assert sub.expect.compauth == ["pass"] and sub.expect.placement == "any"
    assert sub.expect.max_scl == 4
    assert (sub.thresholds.warning, sub.thresholds.critical) == (120.0, 300.0)
    # interval, timeout, jitter, junk_folders: the target's value replaces the default.
    assert (con.interval, con.timeout, con.jitter, con.junk_folders) == (
        3600.0,
        900.0,
        0.0,
        ["Spam"],
    )
    assert con.smtp.ca_file == FIX / "ca.pem" and con.smtp.client_key_file == FIX / "client.key"
    assert con.mailbox.port == 1143 and con.mailbox.timeout == 60.0
    assert con.mailbox.auth.token is not None and con.mailbox.auth.token.get() == "imap-token"
    assert con.expect.placement == "junk" and con.expect.junk_severity == "warning"
    assert con.expect.max_scl == 9 and con.mode == "connector"


def _one(**smtp: object) -> dict:
    return {
        "tag_secret": "${TAG}",
        "targets": [
            {
                "name": "t",
                "smtp": {"host": "127.0.0.1", **smtp},
                "mail_from": "a@example.test",
                "rcpt_to": "b@example.test",
                "mailbox": {
                    "host": "127.0.0.1",
                    "auth": {"method": "token", "username": "b", "token": "${TAG}"},
                },
            }
        ],
    }


TAG = {"TAG": "0123456789abcdef"}


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)])
def test_smtp_port_defaults_by_security(security: str, port: int) -> None:
    c = parse_config(_one(security=security), base_dir=FIX, environ=TAG)
    assert c.targets[0].smtp.port == port
    assert Smtp(host="h", security=security).port == port


def test_inline_secret_warns_and_file_strips_one_newline(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"two-newlines\n\n")
    (tmp_path / "crlf").write_bytes(b"crlf\r\n")
    data = _one(auth={"method": "password", "username": "u", "password_file": "pw"})
    data["tag_secret"] = "inline-tag-secret-0123"
    data["targets"][0]["mailbox"]["auth"] = {
        "method": "password",
        "username": "b",
        "password_file": str(tmp_path / "crlf"),
    }
    c = parse_config(data, base_dir=tmp_path, environ={})
    assert c.targets[0].smtp.auth is not None and c.targets[0].smtp.auth.password is not None
    assert c.targets[0].smtp.auth.password.get() == "two-newlines\n"
    assert c.targets[0].mailbox.auth.password is not None
    assert c.targets[0].mailbox.auth.password.get() == "crlf"
    assert c.warnings == ["tag_secret: inline secret; prefer tag_secret_file or ${ENV}"]


def test_environ_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAG", "from-os-environ-0123")
    assert parse_config(_one(), base_dir=FIX).tag_secret.get() == "from-os-environ-0123"


def test_target_lookup_error_names_the_configured_targets() -> None:
    c = load_config(FIX / "good-full.yml", environ=ENV)
    with pytest.raises(ConfigError) as info:
        c.target("nope")
    assert info.value.errors == ['target "nope" not found; configured: m365-submission, connector']


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    (tmp_path / "c.yml").write_text(
        "tag_secret: ${TAG}\n"
        "targets:\n"
        "  - name: a\n"
        "    smtp: &relay {host: 127.0.0.1, port: 25, security: none}\n"
        "    mail_from: a@example.test\n    rcpt_to: b@example.test\n"
        "    mailbox: {host: 127.0.0.1, auth: {method: token, username: b, token: '${TAG}'}}\n"
        "  - name: b\n"
        "    smtp: {<<: *relay, port: 2525}\n"
        "    mail_from: a@example.test\n    rcpt_to: b@example.test\n"
        "    mailbox: {host: 127.0.0.1, auth: {method: token, username: b, token: '${TAG}'}}\n"
    )
    c = load_config(tmp_path / "c.yml", environ=TAG)
    assert [t.smtp.port for t in c.targets] == [25, 2525]


def test_default_instance_is_the_sanitised_short_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.config.model.socket, "gethostname", lambda: "_web 01.example.com")
    assert parse_config(_one(), base_dir=FIX, environ=TAG).instance == "web-01"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("300", 300), (300, 300), (1.5, 1.5), ("30s", 30), ("5m", 300), ("1h", 3600),
     ("1m30s", 90), ("250ms", 0.25), ("1d2h", 93600), (" 2m ", 120), ("1.5m", 90)],
)  # fmt: skip
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 min", "m", "30s5m", "5m5m", "-5m", "1h-", True, None])
def test_parse_duration_error_names_the_value(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(value)  # type: ignore[arg-type]
    shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
    assert f"invalid duration {shown}:" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (0.25, "250ms"), (3600, "1h"), (0, "0ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_secret_never_shows_itself() -> None:
    s = Secret("hunter2-value")
    assert (str(s), repr(s), f"{s}", f"{s!r}", f"{s:>20}") == ("<secret>",) * 5
    assert s.get() == "hunter2-value" and s == Secret("hunter2-value") and s != Secret("x")


CANARY = "q7Zx9Kp-s3cr3t-9f8e7d6c5b4a"  # its 6-byte prefix is a secret too


def _strings(obj: object) -> list[str]:
    out = [str(obj), repr(obj)]
    if isinstance(obj, BaseException):
        out += traceback.format_exception(obj)
        out += [str(getattr(obj, "__context__", "")), repr(getattr(obj, "__context__", ""))]
    return out


def test_secrets_never_leak_into_errors_reprs_or_dumps(tmp_path: Path) -> None:
    """Put one known secret everywhere a secret can go, trigger every error around it, grep."""
    (tmp_path / "secret").write_text(CANARY + "\n")
    (tmp_path / "short").write_text(CANARY[:6])
    env = {"CANARY": CANARY, "SHORT": CANARY[:6], **TAG}
    produced: list[str] = []

    def attempt(data: dict) -> None:
        try:
            c = parse_config(data, base_dir=tmp_path, environ=env)
        except ConfigError as e:
            produced.extend(_strings(e) + e.errors)
        else:
            produced.extend(
                _strings(c) + c.warnings + [c.model_dump_json(), json.dumps(redacted_dict(c))]
            )
            produced.extend([str(c.model_dump()), repr(c.targets[0].smtp.auth)])

    auth_variants = [
        {"password": CANARY}, {"password": "${CANARY}"}, {"password_file": "secret"},
        {"password": CANARY, "password_file": "secret"}, {"password": [CANARY]},
        {"password": {"x": CANARY}}, {"password": "${" + CANARY}, {"token": CANARY},
        {"client_secret": CANARY}, {"certificate_passphrase": CANARY},
    ]  # fmt: skip
    for variant in auth_variants:
        for extra in ({}, {"port": "abc", "bogus": 1}):
            auth = {"method": "password", "username": "u", **variant}
            attempt(_one(auth=auth, **extra))
    for tag in (CANARY, "${CANARY}", "${SHORT}", CANARY[:6], [CANARY], {"a": CANARY}):
        data = _one()
        data["tag_secret"] = tag
        attempt(data)
    data = _one()
    data.pop("tag_secret")
    data["tag_secret_file"] = "short"
    attempt(data)
    data["tag_secret_file"] = "secret"
    data["tag_secret"] = CANARY
    attempt(data)
    data = _one(auth={"method": "password", "username": "u", "password": CANARY}, security="none")
    attempt(data)
    # The YAML path too: a syntax error on the line that holds the secret.
    (tmp_path / "bad.yml").write_text(f'tag_secret: "{CANARY}\ntargets: [\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.yml")
    produced.extend(_strings(info.value))
    # Direct construction (other modules' tests) raises pydantic's own error: no input echoed.
    with pytest.raises(ValueError) as direct:
        Auth(method="password", username="u", password=CANARY, bogus=1)  # type: ignore[call-arg]
    produced.extend(_strings(direct.value))
    assert len(produced) > 100
    assert sum("<secret>" in s for s in produced) > 20  # the success paths ran too
    leaks = [s for s in produced if CANARY in s or CANARY[:6] in s]
    assert leaks == []


def test_import_stays_cheap() -> None:
    """probe.config is imported by every entry point: no network client libraries behind it."""
    code = "import sys, probe.config; print(sorted({'aiosmtplib', 'imapclient', 'msal'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=FIX.parents[2]
    )
    assert out.stdout.strip() == "[]"


def test_config_is_frozen_and_rejects_unknown_fields() -> None:
    c = parse_config(_one(), base_dir=FIX, environ=TAG)
    with pytest.raises(ValueError):
        c.instance = "x"  # type: ignore[misc]
    assert isinstance(c, Config)
    with pytest.raises(ValueError):
        Smtp(host="h", tls_mode="x")  # type: ignore[call-arg]


def test_late_grace_is_accepted_with_a_warning_that_it_does_nothing(tmp_path: Path) -> None:
    # Older configs still load; the warning says the key can go (docs/configuration.md).
    data = yaml.safe_load((FIX / "good-minimal.yml").read_text())
    data["defaults"] = {**data.get("defaults", {}), "late_grace": "2h"}
    c = parse_config(data, base_dir=FIX, environ=ENV)
    assert c.defaults.late_grace == 7200.0
    assert any(w.startswith("defaults.late_grace has no effect") for w in c.warnings)
