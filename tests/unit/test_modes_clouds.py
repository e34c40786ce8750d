"""Relay modes hve and acs, Microsoft clouds and the basic-auth readiness warning, as validate shows them."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from probe.config import ConfigError, parse_config
from probe.m365.authority import authority_of, explain_error, explain_exception

ROOT = Path(__file__).parents[2]
SECRET = "a-secret-of-enough-length"
ENV = {"RP_SECRET": SECRET}
MODES = ("submission", "direct_send", "connector", "hve", "acs")
CLOUDS = ("global", "gcc", "gcc_high", "dod", "china")

#: What each cloud resolves to, written out here rather than read from probe/config/clouds.py.
EXPECTED = {
    "global": {
        "login": "https://login.microsoftonline.com/",
        "scope": "https://outlook.office365.com/.default",
        "submission": "smtp.office365.com",
        "imap": "outlook.office365.com",
        "mx": "mail.protection.outlook.com",
    },
    "gcc": {
        "login": "https://login.microsoftonline.com/",
        "scope": "https://outlook.office365.com/.default",
        "submission": "smtp.office365.com",
        "imap": "outlook.office365.com",
        "mx": "mail.protection.outlook.com",
    },
    "gcc_high": {
        "login": "https://login.microsoftonline.us/",
        "scope": "https://outlook.office365.us/.default",
        "submission": "smtp.office365.us",
        "imap": "outlook.office365.us",
        "mx": "mail.protection.office365.us",
    },
    "dod": {
        "login": "https://login.microsoftonline.us/",
        "scope": "https://outlook-dod.office365.us/.default",
        "submission": "outlook-dod.office365.us",
        "imap": "outlook-dod.office365.us",
        "mx": "mail.protection.office365.us",
    },
    "china": {
        "login": "https://login.partner.microsoftonline.cn/",
        "scope": "https://partner.outlook.cn/.default",
        "submission": "smtp.partner.outlook.cn",
        "imap": "partner.outlook.cn",
        "mx": "mail.protection.partner.outlook.cn",
    },
}


def _oauth(username: str = "probe@contoso.com", **over: Any) -> dict[str, Any]:
    return {
        "method": "oauth2",
        "username": username,
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": "${RP_SECRET}",
    } | over


PASSWORD = {"method": "password", "username": "probe@contoso.com", "password": "${RP_SECRET}"}
ACS_USER = "contoso-acs.11111111-2222-3333-4444-555555555555.aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def _smtp(mode: str, cloud: str, certs: dict[str, str]) -> dict[str, Any]:
    """The least each mode needs; the host only where no preset fills it (the tenant MX)."""
    if mode == "submission" or mode == "hve":
        return {"auth": _oauth()}
    if mode == "acs":
        return {"auth": {"method": "password", "username": ACS_USER, "password": "${RP_SECRET}"}}
    mx = {"host": f"contoso-com.{EXPECTED[cloud]['mx']}"}
    return mx | certs if mode == "connector" else mx


def _target(name: str, mode: str | None, smtp: dict[str, Any], **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "name": name,
        "smtp": smtp,
        "mail_from": "probe@contoso.com",
        "rcpt_to": "inbox@contoso.com",
        "mailbox": {"auth": _oauth("inbox@contoso.com")},  # host: the cloud's IMAP host
    } | over
    if mode is not None:
        t["mode"] = mode
    elif "host" not in t["mailbox"]:
        t["mailbox"] = {"host": "127.0.0.1", **t["mailbox"]}  # no preset fills it
    return t


def _validate(tmp_path: Path, targets: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    """``relayprobe validate --config FILE --json``, as a user runs it."""
    path = tmp_path / "relayprobe.yml"
    path.write_text(json.dumps({"tag_secret": "${RP_SECRET}", "targets": targets} | top))
    proc = subprocess.run(
        [sys.executable, "-m", "relayprobe", "validate", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **ENV},
        timeout=60,
    )
    assert proc.returncode in (0, 3), proc.stderr
    return json.loads(proc.stdout)


def _cfg(*targets: dict[str, Any], **top: Any):  # type: ignore[no-untyped-def]
    data = {"tag_secret": "${RP_SECRET}", "targets": list(targets)} | top
    return parse_config(data, base_dir=Path("/"), environ=ENV)


def _errors(*targets: dict[str, Any], **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        _cfg(*targets, **top)
    return e.value.errors


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "c.crt").write_text("cert")
    (tmp_path / "c.key").write_text("key")
    return {"client_cert_file": str(tmp_path / "c.crt"), "client_key_file": str(tmp_path / "c.key")}


@pytest.fixture(scope="module")
def every_mode_and_cloud(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One validate run over a config with a target for each mode x cloud (25 targets)."""
    tmp = tmp_path_factory.mktemp("modes")
    (tmp / "c.crt").write_text("cert")
    (tmp / "c.key").write_text("key")
    certs = {"client_cert_file": str(tmp / "c.crt"), "client_key_file": str(tmp / "c.key")}
    targets = [
        _target(f"{mode}-{cloud}", mode, _smtp(mode, cloud, certs), cloud=cloud)
        for mode in MODES
        for cloud in CLOUDS
    ]
    doc = _validate(tmp, targets)
    assert doc["valid"] is True, doc["errors"]
    return doc


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("mode", MODES)
def test_validate_json_resolves_each_mode_in_each_cloud(
    every_mode_and_cloud: dict[str, Any], mode: str, cloud: str
) -> None:
    doc, want = every_mode_and_cloud, EXPECTED[cloud]
    t = next(t for t in doc["config"]["targets"] if t["name"] == f"{mode}-{cloud}")
    smtp, box = t["smtp"], t["mailbox"]
    assert (t["mode"], t["cloud"]) == (mode, cloud)
    host = {
        "submission": want["submission"],
        "hve": "smtp.hve.mx.microsoft",
        "acs": "smtp.azurecomm.net",
    }.get(mode, f"contoso-com.{want['mx']}")
    port = 25 if mode in ("direct_send", "connector") else 587
    assert (smtp["host"], smtp["port"], smtp["security"]) == (host, port, "starttls")
    # The mailbox side: the cloud's IMAP host, implicit TLS, its authority and scope.
    assert (box["host"], box["port"], box["security"]) == (want["imap"], 993, "tls")
    tenant = "contoso.onmicrosoft.com"
    assert box["auth"]["authority"] == want["login"] + tenant
    assert (box["auth"]["scope"], box["auth"]["cloud"]) == (want["scope"], cloud)
    if mode in ("submission", "hve"):  # XOAUTH2 on the sending side too
        assert smtp["auth"]["authority"] == want["login"] + tenant
        assert smtp["auth"]["scope"] == want["scope"]
    elif mode == "acs":  # AUTH with the client secret as password: no token, no scope
        assert smtp["auth"]["method"] == "password" and smtp["auth"]["scope"] is None
        assert smtp["auth"]["username"] == ACS_USER and smtp["auth"]["password"] == "<secret>"
    else:
        assert smtp["auth"] is None
    assert SECRET not in json.dumps(doc)


def test_the_cloud_comes_from_defaults_and_a_target_overrides_it(tmp_path: Path) -> None:
    targets = [
        _target("inherits", "submission", {"auth": _oauth()}),
        _target("own", "submission", {"auth": _oauth()}, cloud="china"),
    ]
    doc = _validate(tmp_path, targets, defaults={"cloud": "gcc_high"})
    inherits, own = doc["config"]["targets"]
    assert (inherits["cloud"], inherits["smtp"]["host"]) == ("gcc_high", "smtp.office365.us")
    assert inherits["smtp"]["auth"]["authority"].startswith("https://login.microsoftonline.us/")
    assert (own["cloud"], own["smtp"]["host"]) == ("china", "smtp.partner.outlook.cn")
    assert doc["config"]["defaults"]["cloud"] == "gcc_high"


def test_explicit_host_authority_and_scope_win_over_the_cloud(tmp_path: Path) -> None:
    auth = _oauth(scope="https://example.test/.default")
    auth.pop("tenant_id")
    auth["authority"] = "https://login.example.test/tenant"
    smtp = {"host": "relay.example.test", "port": 2587, "auth": auth}
    mailbox = {"host": "imap.example.test", "auth": _oauth("inbox@contoso.com", cloud="global")}
    doc = _validate(tmp_path, [_target("t", "hve", smtp, cloud="dod", mailbox=mailbox)])
    t = doc["config"]["targets"][0]
    assert (t["smtp"]["host"], t["smtp"]["port"], t["mailbox"]["host"]) == (
        "relay.example.test",
        2587,
        "imap.example.test",
    )
    assert t["smtp"]["auth"]["authority"] == "https://login.example.test/tenant"
    assert t["smtp"]["auth"]["scope"] == "https://example.test/.default"
    # auth.cloud: a mailbox in another cloud than the target's (here the commercial one).
    assert (
        t["mailbox"]["auth"]["authority"]
        == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    )
    assert t["mailbox"]["auth"]["scope"] == "https://outlook.office365.com/.default"


def test_a_device_code_sign_in_asks_for_its_clouds_delegated_permissions() -> None:
    auth = _oauth(flow="device_code", token_cache_file="/tmp/relayprobe-tokens.json")
    auth.pop("client_secret")
    c = _cfg(_target("t", "submission", {"auth": auth}, cloud="gcc_high"))
    assert c.targets[0].smtp.auth is not None
    assert c.targets[0].smtp.auth.scope == "https://outlook.office365.us/SMTP.Send"


def test_an_unknown_cloud_is_an_error_naming_the_clouds() -> None:
    errs = _errors(_target("t", "submission", {"auth": _oauth()}, cloud="gcc-high"))
    assert errs == [
        'targets[0].cloud: expected one of global, gcc, gcc_high, dod, china, got "gcc-high"'
    ]
    errs = _errors(_target("t", None, {"host": "127.0.0.1"}), defaults={"cloud": "azure"})
    assert errs == [
        'defaults.cloud: expected one of global, gcc, gcc_high, dod, china, got "azure"'
    ]


def test_without_a_mode_the_cloud_sets_only_authority_and_scope() -> None:
    t = _cfg(_target("t", None, {"host": "127.0.0.1", "auth": _oauth()}, cloud="gcc_high"))
    s = t.targets[0].smtp
    assert s.host == "127.0.0.1" and s.auth is not None
    assert authority_of(s.auth) == "https://login.microsoftonline.us/contoso.onmicrosoft.com"
    t = _target("t", None, {"host": "127.0.0.1"})
    errs = _errors(t | {"mailbox": {"auth": _oauth()}})
    assert errs == ["targets[0].mailbox.host: missing required key"]  # no preset, no default


# Contradictions, each named by its path.


def test_submission_contradictions_follow_the_cloud() -> None:
    errs = _errors(_target("t", "submission", {"security": "tls", "auth": _oauth()}, cloud="dod"))
    assert errs == [
        'targets[0].smtp.security: "tls" (implicit TLS, port 465) is not supported by '
        "outlook-dod.office365.us; use starttls on port 587"
    ]
    errs = _errors(_target("t", "submission", {"host": "smtp.hve.mx.microsoft", "auth": _oauth()}))
    assert errs == [
        "targets[0].smtp.host: smtp.hve.mx.microsoft is the High Volume Email endpoint; mode "
        "submission sends to smtp.office365.com:587 (or use mode hve)"
    ]


def test_hve_contradictions(certs: dict[str, str]) -> None:
    errs = _errors(_target("t", "hve", {}))
    assert len(errs) == 1 and errs[0].startswith("targets[0].smtp.auth: required by mode hve")
    assert "Add-HVEAppAccess" in errs[0]
    errs = _errors(_target("t", "hve", {"security": "none", "auth": PASSWORD}))
    assert any(
        e.startswith('targets[0].smtp.security: "none" is not allowed with mode hve') for e in errs
    )
    errs = _errors(_target("t", "hve", {"port": 465, "auth": PASSWORD}))
    assert errs == ["targets[0].smtp.port: 465 is not supported by smtp.hve.mx.microsoft; use 587"]
    errs = _errors(_target("t", "hve", {"security": "tls", "auth": PASSWORD}))
    assert errs[0].startswith('targets[0].smtp.security: "tls" (implicit TLS, port 465)')
    errs = _errors(_target("t", "hve", {"host": "smtp.office365.com", "auth": PASSWORD}))
    assert errs == [
        "targets[0].smtp.host: smtp.office365.com is the SMTP AUTH submission endpoint; mode hve "
        "sends to smtp.hve.mx.microsoft:587 (or use mode submission)"
    ]
    errs = _errors(_target("t", "hve", {"auth": PASSWORD, **certs}))
    assert errs[0].startswith("targets[0].smtp.client_cert_file: not used by mode hve")


def test_hve_warns_about_a_recipient_outside_the_tenant() -> None:
    c = _cfg(_target("t", "hve", {"auth": _oauth()}, rcpt_to="someone@fabrikam.com"))
    assert c.warnings == [
        "targets[0].rcpt_to: High Volume Email delivers only to recipients inside the tenant; "
        "is fabrikam.com one of its accepted domains?"
    ]
    # The sender's domain or the tenant's (tenant_id as a domain) count as inside.
    assert not _cfg(_target("t", "hve", {"auth": _oauth()})).warnings
    inside = _target(
        "t", "hve", {"auth": _oauth()}, rcpt_to="x@contoso.onmicrosoft.com", mail_from="a@b.com"
    )
    assert not _cfg(inside).warnings


def test_acs_without_a_password_is_one_clear_error() -> None:
    auth = {"method": "password", "username": ACS_USER}
    errs = _errors(_target("t", "acs", {"auth": auth}))
    assert errs == [
        "targets[0].smtp.auth.password: required by mode acs: the Entra app's client secret is "
        "the SMTP password"
    ]


def test_acs_with_the_secret_under_client_secret_says_where_it_goes() -> None:
    auth = {"method": "password", "username": ACS_USER, "client_secret": "${RP_SECRET}"}
    errs = _errors(_target("t", "acs", {"auth": auth}))
    assert errs == [
        'targets[0].smtp.auth.client_secret: not used by method "password"',
        "targets[0].smtp.auth.password: required by mode acs: the Entra app's client secret is "
        "the SMTP password (write it as password_file, not client_secret)",
    ]


def test_acs_contradictions() -> None:
    errs = _errors(_target("t", "acs", {}))
    assert len(errs) == 1 and errs[0].startswith("targets[0].smtp.auth: required by mode acs")
    assert "<ACS resource name>.<Entra app id>.<tenant id>" in errs[0]
    errs = _errors(_target("t", "acs", {"auth": _oauth()}))
    assert errs == [
        'targets[0].smtp.auth.method: mode acs needs method "password": the Entra app\'s client '
        "secret is the SMTP password (AUTH LOGIN), not an OAuth token"
    ]
    auth = {"method": "password", "username": ACS_USER, "password": "${RP_SECRET}"}
    errs = _errors(_target("t", "acs", {"security": "tls", "auth": auth}))
    assert errs == [
        'targets[0].smtp.security: "tls" (implicit TLS, port 465) is not supported by '
        "smtp.azurecomm.net; use starttls on port 587"
    ]
    # An SMTP Username resource may be an address or free-form: any username is taken.
    for username in ("probe-smtp@contoso.com", "probe-smtp"):
        ok = _cfg(_target("t", "acs", {"auth": auth | {"username": username}}))
        assert ok.targets[0].smtp.auth is not None
        assert ok.targets[0].smtp.auth.username == username


def test_direct_send_and_connector_name_the_clouds_mx_host(certs: dict[str, str]) -> None:
    errs = _errors(_target("t", "direct_send", {}, cloud="china"))
    assert (
        "targets[0].smtp.host: required by mode direct_send: the tenant's MX host, e.g. "
        "contoso-com.mail.protection.partner.outlook.cn"
    ) in errs
    errs = _errors(_target("t", "connector", {"host": "smtp.office365.us", **certs}))
    assert errs[0].startswith(
        "targets[0].smtp.host: smtp.office365.us is the SMTP AUTH submission endpoint; mode "
        "connector sends to the tenant's MX host"
    )
    c = _cfg(
        _target("t", "direct_send", {"host": "contoso-com.mail.protection.office365.us"}),
        defaults={"cloud": "gcc_high"},
    )
    assert not c.warnings  # contoso.com is behind contoso-com, in the .us suffix too


# The basic-auth readiness warning.

READINESS = (
    'targets[0].smtp.auth.method: "password" over SMTP AUTH submission: Microsoft switches '
    "basic authentication off by default for existing tenants at the end of December 2026; move "
    "to XOAUTH2 (auth.method: oauth2) or to High Volume Email or Azure Communication Services "
    "(mode: hve or mode: acs)"
)


def test_validate_json_warns_a_password_over_submission(tmp_path: Path) -> None:
    doc = _validate(tmp_path, [_target("t", "submission", {"auth": PASSWORD})])
    assert doc["valid"] is True
    path, message = READINESS.split(": ", 1)
    assert {"path": path, "message": message} in doc["warnings"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_readiness_warning_applies_in_every_cloud(cloud: str) -> None:
    c = _cfg(_target("t", "submission", {"auth": PASSWORD}, cloud=cloud))
    assert READINESS in c.warnings


def test_the_readiness_warning_only_for_a_password_over_submission() -> None:
    # No mode, but Microsoft's submission host: still a password over SMTP AUTH submission.
    c = _cfg(_target("t", None, {"host": "smtp.office365.us", "auth": PASSWORD}))
    assert READINESS in c.warnings
    for quiet in (
        _target("t", "submission", {"auth": _oauth()}),
        _target("t", "hve", {"auth": PASSWORD}),
        _target("t", None, {"host": "127.0.0.1", "port": 2587, "auth": PASSWORD}),  # a test relay
    ):
        assert not [w for w in _cfg(quiet).warnings if "December 2026" in w]


# Remedies that named the global cloud follow the block's cloud.


def test_token_remedies_name_the_blocks_cloud() -> None:
    auth = _cfg(_target("t", "submission", {"auth": _oauth()}, cloud="gcc_high")).targets[0]
    assert auth.smtp.auth is not None
    _what, remedy = explain_error(auth.smtp.auth, "invalid_scope", "AADSTS70011: bad", [70011])
    assert remedy == "scope must be https://outlook.office365.us/.default"
    failure = explain_exception(
        auth.smtp.auth, ssl.SSLCertVerificationError("certificate verify failed")
    )
    assert "exempt login.microsoftonline.us from TLS inspection" in (failure.remedy or "")
