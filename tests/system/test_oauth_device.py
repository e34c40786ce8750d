"""Delegated OAuth: relayprobe login (device code) -> 0600 token cache -> silent refresh -> XOAUTH2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from probe.config import ConfigError, parse_config
from probe.failure import ProbeFailure
from probe.m365 import tokens as oauth_mod
from probe.m365.delegated import DelegatedProvider
from probe.result import Reason, Stage, Status
from probe.roundtrip import run_probe
from tests.oauth.fixture import INBOX, SENDER, TAG_SECRET, OAuthEnv, oauth, oauth_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _device_auth(env: OAuthEnv, user: str, cache: Path, **over: object) -> dict:
    return {
        "method": "oauth2",
        "flow": "device_code",
        "authority": env.authority.url,
        "client_id": "app-public",
        "username": user,
        "token_cache_file": str(cache),
    } | over


def _target(env: OAuthEnv, cache: Path) -> dict:
    """Both sides delegated, one cache file holding two signed-in users."""
    t = env.target(smtp_auth=_device_auth(env, SENDER, cache))
    t["mailbox"] = t["mailbox"] | {"auth": _device_auth(env, INBOX, cache)}
    return t


def _write_config(env: OAuthEnv, tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "tokens.json"
    path = tmp_path / "relayprobe.yml"
    data = {"instance": "oauth-test", "tag_secret": TAG_SECRET, "targets": [_target(env, cache)]}
    path.write_text(yaml.safe_dump(data))
    return path, cache


def _login(env: OAuthEnv, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, **{oauth_mod.CA_ENV: str(env.ca_file), "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "relayprobe",
            *extra,
            "login",
            "--config",
            str(config),
            "--target",
            "oauth",
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _signed_in(env: OAuthEnv, tmp_path: Path) -> tuple[Path, Path]:
    config, cache = _write_config(env, tmp_path)
    env.authority.device.sign_in_as[:] = [SENDER, INBOX]  # the "browser": smtp first, then IMAP
    proc = _login(env, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return config, cache


def _config(env: OAuthEnv, cache: Path):  # type: ignore[no-untyped-def]
    return env.config(_target(env, cache))


async def test_login_through_the_cli_keeps_a_0600_cache_and_prints_no_token(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
) -> None:
    config, cache = _write_config(oauth, tmp_path)
    oauth.authority.device.sign_in_as[:] = [SENDER, INBOX]
    proc = _login(oauth, config, "-vv")
    written = proc.stdout + proc.stderr
    assert proc.returncode == 0, written
    # MSAL's message (URL + code) for each of the two users, then who signed in with what.
    assert written.count("To sign in, use a web browser to open the page https://127.0.0.1") == 2
    assert (
        f"Signed in as {SENDER} for smtp ({SENDER}); granted: "
        "https://outlook.office.com/SMTP.Send" in proc.stdout
    )
    assert (
        f"Signed in as {INBOX} for mailbox ({INBOX}); granted: "
        "https://outlook.office.com/IMAP.AccessAsUser.All" in proc.stdout
    )
    assert (cache.stat().st_mode & 0o777) == 0o600
    # MSAL really polled: one authorization_pending answer per sign-in, then the tokens.
    requests = oauth.authority.requests
    assert sum(r.endswith("/oauth2/v2.0/devicecode") for r in requests) == 2
    assert sum(r.endswith("/oauth2/v2.0/token") for r in requests) >= 4
    refresh_tokens = oauth.authority.device.refresh_tokens
    assert len(refresh_tokens) == 2
    stored = cache.read_text()
    assert all(rt in stored for rt in refresh_tokens)  # the cache is the real thing ...
    leaked = [t for t in refresh_tokens + oauth.authority.tokens if t in written]
    assert not leaked, "a token was printed"  # ... and nothing secret went to the terminal
    login = json.loads(stored)["login"]
    assert login == f"relayprobe login --config {config} --target oauth"


async def test_run_probe_delivers_with_a_token_refreshed_from_the_cache(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(oauth_mod.CA_ENV, str(oauth.ca_file))  # run_probe's own providers
    # Under 5 minutes: MSAL treats the access token from login as stale and uses the refresh token.
    oauth.authority.token_lifetime = 120
    _config_path, cache = _signed_in(oauth, tmp_path)
    issued_at_login = len(oauth.authority.issued)
    before = cache.read_text()
    config = _config(oauth, cache)
    target = config.targets[0]
    result = await run_probe(config, target)  # provider_for picks the delegated provider
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    fresh = oauth.authority.issued[issued_at_login:]
    assert {(c["email"], c["scp"]) for c in fresh} >= {
        (SENDER, "SMTP.Send"),
        (INBOX, "IMAP.AccessAsUser.All"),
    }
    assert f"sasl_method=XOAUTH2, sasl_username={SENDER}" in oauth.pair.log_text()
    # The rotated refresh tokens were saved, atomically and still private.
    assert cache.read_text() != before
    assert (cache.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob(".tokens.json.*"))  # no temporary file left behind
    assert isinstance(oauth_mod.provider_for(target.smtp.auth), DelegatedProvider)


async def test_revoked_refresh_token_is_oauth_token_failed_with_the_login_remedy(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(oauth_mod.CA_ENV, str(oauth.ca_file))
    oauth.authority.token_lifetime = 120
    config_path, cache = _signed_in(oauth, tmp_path)
    assert oauth.authority.device.revoke() == 2  # Revoke-MgUserSignInSession
    config = _config(oauth, cache)
    result = await run_probe(config, config.targets[0])
    # The mailbox is logged in to first, so its side meets the revoked sign-in (deliver stage).
    assert (result.status, result.stage, result.reason) == (
        Status.CRITICAL,
        Stage.DELIVER,
        Reason.OAUTH_TOKEN_FAILED,
    )
    assert result.message.startswith("deliver: IMAP token from ")
    assert "AADSTS50173" in result.message and str(cache) in result.message
    assert result.remedy is not None and "revoked" in result.remedy
    assert f"relayprobe login --config {config_path} --target oauth" in result.remedy
    assert not any(
        rt in result.message + result.remedy for rt in oauth.authority.device.refresh_tokens
    )


async def test_no_sign_in_yet_names_relayprobe_login(oauth: OAuthEnv, tmp_path: Path) -> None:  # noqa: F811
    auth = _config(oauth, tmp_path / "never.json").targets[0].smtp.auth
    with pytest.raises(ProbeFailure) as exc:
        await oauth_mod.token_provider(auth, ca_file=oauth.ca_file)()
    assert exc.value.reason is Reason.OAUTH_TOKEN_FAILED and exc.value.stage is Stage.AUTH
    assert "no sign-in stored" in str(exc.value)
    assert exc.value.remedy is not None and "relayprobe login --config" in exc.value.remedy


async def test_group_readable_cache_file_is_refused(oauth: OAuthEnv, tmp_path: Path) -> None:  # noqa: F811
    config_path, cache = _signed_in(oauth, tmp_path)
    cache.chmod(0o640)
    auth = _config(oauth, cache).targets[0].smtp.auth
    with pytest.raises(ProbeFailure) as exc:
        await oauth_mod.token_provider(auth, ca_file=oauth.ca_file)()
    assert exc.value.reason is Reason.OAUTH_TOKEN_FAILED
    assert f"token cache {cache} is refused: mode 0640 lets group or others read it" in str(
        exc.value
    )
    assert exc.value.remedy is not None and f"chmod 600 {cache}" in exc.value.remedy
    # login refuses it too rather than reading a file others may have copied
    proc = _login(oauth, config_path)
    assert proc.returncode == 2
    assert "mode 0640 lets group or others read it" in proc.stderr
    assert "remedy: chmod 600" in proc.stderr
    assert (cache.stat().st_mode & 0o777) == 0o640  # left as it was for the admin to look at


def test_login_with_an_unknown_app_exits_2_with_the_aadsts_remedy(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
) -> None:
    cache = tmp_path / "tokens.json"
    t = oauth.target(smtp_auth=_device_auth(oauth, SENDER, cache, client_id="app-nobody"))
    path = tmp_path / "relayprobe.yml"
    path.write_text(yaml.safe_dump({"tag_secret": TAG_SECRET, "targets": [t]}))
    proc = _login(oauth, path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "login for smtp (sender@oauth.test)" in proc.stderr and "AADSTS700016" in proc.stderr
    assert "remedy: client_id is not an app" in proc.stderr
    assert not cache.exists()


def test_login_for_a_target_without_device_code_exits_3(oauth: OAuthEnv, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "relayprobe.yml"
    path.write_text(yaml.safe_dump({"tag_secret": TAG_SECRET, "targets": [oauth.target()]}))
    proc = _login(oauth, path)
    assert proc.returncode == 3
    assert 'target "oauth" has no auth block with method oauth2 and flow device_code' in proc.stderr


def _errors(auth: dict) -> list[str]:
    t = {
        "name": "t",
        "smtp": {"host": "h", "auth": auth},
        "mail_from": "a@b.test",
        "rcpt_to": "c@d.test",
        "mailbox": {"host": "h", "auth": auth},
    }
    with pytest.raises(ConfigError) as exc:
        parse_config({"tag_secret": TAG_SECRET, "targets": [t]}, base_dir=Path("/"), environ={})
    return [e for e in exc.value.errors if e.startswith("targets[0].smtp.auth.")]


DEVICE = {
    "method": "oauth2",
    "flow": "device_code",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "c1",
    "username": "a@b.test",
    "token_cache_file": "/tmp/relayprobe.json",
}


def test_device_code_config_errors_name_their_path() -> None:
    missing = {k: v for k, v in DEVICE.items() if k != "token_cache_file"}
    assert _errors(missing) == [
        'targets[0].smtp.auth.token_cache_file: required by flow "device_code": the file that '
        "keeps the refresh token from relayprobe login"
    ]
    assert _errors(DEVICE | {"client_secret": "s3cret-value"}) == [
        'targets[0].smtp.auth.client_secret: not used by flow "device_code": a user signs in, '
        'not the app (remove it, or use flow "client_credentials")'
    ]
    assert _errors(DEVICE | {"token_cache_file": "/no/such/dir/t.json"}) == [
        'targets[0].smtp.auth.token_cache_file: directory "/no/such/dir" of "t.json" does not '
        "exist; create it first"
    ]
    assert _errors(DEVICE | {"flow": "implicit"})[0].startswith("targets[0].smtp.auth.flow: ")
    app = {k: v for k, v in DEVICE.items() if k != "flow"} | {"client_secret": "s3cret-value"}
    assert _errors(app) == [
        'targets[0].smtp.auth.token_cache_file: only used with flow "device_code"'
    ]


def test_device_code_scopes_default_to_the_delegated_permission_of_each_protocol() -> None:
    t = {
        "name": "t",
        "smtp": {"host": "h", "auth": DEVICE},
        "mail_from": "a@b.test",
        "rcpt_to": "c@d.test",
        "mailbox": {"host": "h", "auth": DEVICE},
    }
    config = parse_config(
        {"tag_secret": TAG_SECRET, "targets": [t]}, base_dir=Path("/"), environ={}
    )
    target = config.targets[0]
    assert target.smtp.auth is not None and target.smtp.auth.flow == "device_code"
    assert target.smtp.auth.scope == "https://outlook.office.com/SMTP.Send"
    assert target.mailbox.auth.scope == "https://outlook.office.com/IMAP.AccessAsUser.All"
    assert target.smtp.auth.token_cache_file == Path("/tmp/relayprobe.json")
