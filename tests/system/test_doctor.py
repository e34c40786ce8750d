"""``relayprobe doctor`` against the OAuth stand-in: every step reports ok or FAIL with a fix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.m365 import tokens as oauth_mod
from relayprobe.doctor import run_doctor
from tests.oauth.fixture import SEND_SECRET, OAuthEnv, oauth, oauth_env  # noqa: F401


def _run(tmp_path: Path, env: OAuthEnv, *targets: dict[str, Any]) -> tuple[int, str, str]:
    path = tmp_path / "relayprobe.yml"
    data = {
        "instance": "doc",
        "tag_secret": "doctor-tag-secret-0123456789",
        "targets": list(targets),
    }
    path.write_text(yaml.safe_dump(data))
    out, err = io.StringIO(), io.StringIO()
    code = run_doctor(str(path), targets=None, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def env(oauth: OAuthEnv, monkeypatch: pytest.MonkeyPatch) -> OAuthEnv:  # noqa: F811
    monkeypatch.setenv(oauth_mod.CA_ENV, str(oauth.ca_file))
    return oauth


def _steps(output: str) -> dict[str, str]:
    """step name -> "ok" / "FAIL" / "WARN" / "-" (last one wins)."""
    steps = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("ok", "FAIL", "WARN", "-"):
            steps[parts[1]] = parts[0]
    return steps


def test_healthy_oauth_target_passes_every_step(tmp_path: Path, env: OAuthEnv) -> None:
    code, out, _err = _run(tmp_path, env, env.target())
    steps = _steps(out)
    for step in (
        "dns",
        "tcp",
        "ehlo",
        "tls",
        "ehlo-tls",
        "smtp-token",
        "smtp-auth",
        "envelope",
        "imap-token",
        "imap-login",
        "folders",
    ):
        assert steps.get(step) == "ok", out
    assert code == 0 and out.rstrip().endswith("all checks passed")
    assert "AUTH LOGIN XOAUTH2" in out and "(name checked)" in out
    assert "'INBOX', 'Junk Email'" in out


def test_wrong_secret_fails_the_token_step_with_the_fix(tmp_path: Path, env: OAuthEnv) -> None:
    wrong = "Wd7~doctor-wrong-secret-value"
    code, out, err = _run(tmp_path, env, env.target(smtp_auth=env.auth(client_secret=wrong)))
    steps = _steps(out)
    assert code == 2 and steps["smtp-token"] == "FAIL" and "smtp-auth" not in steps
    assert "AADSTS7000215" in out and "fix: the client secret is wrong" in out
    assert steps["imap-login"] == "ok"  # the IMAP side is checked on its own
    assert wrong not in out + err and SEND_SECRET not in out + err


def test_mailbox_not_permitted_fails_smtp_auth(tmp_path: Path, env: OAuthEnv) -> None:
    env.authority.clients["app-send"].permitted = False
    code, out, _ = _run(tmp_path, env, env.target())
    assert code == 2 and _steps(out)["smtp-auth"] == "FAIL"
    assert "auth_failed: 535" in out and "Add-MailboxPermission" in out


def test_missing_junk_folder_is_named_with_what_exists(tmp_path: Path, env: OAuthEnv) -> None:
    code, out, _ = _run(tmp_path, env, env.target(junk_folders=["Junk-E-Mail"]))
    assert code == 2 and _steps(out)["folders"] == "FAIL"
    assert "missing 'Junk-E-Mail'" in out and "'Junk Email'" in out


def test_connector_with_unknown_certificate_fails_at_the_envelope(
    tmp_path: Path, env: OAuthEnv
) -> None:
    cert, key = env.pair.client_cert("stranger")
    t = env.target(mode="connector")
    t["smtp"] = {
        "host": "127.0.0.1",
        "port": env.pair.connector_port,
        "ca_file": str(env.ca_file),
        "client_cert_file": str(cert),
        "client_key_file": str(key),
    }
    code, out, _ = _run(tmp_path, env, t)
    steps = _steps(out)
    assert steps["client-cert"] == "ok" and steps["smtp-auth"] == "-"
    assert code == 2 and steps["envelope"] == "FAIL" and "5.7.64" in out
    assert "TlsSenderCertificateName" in out
    cert, key = env.pair.client_cert("connector")
    t["smtp"] |= {"client_cert_file": str(cert), "client_key_file": str(key)}
    code, out, _ = _run(tmp_path, env, t)
    assert code == 0 and _steps(out)["envelope"] == "ok", out


def test_unresolvable_host_and_closed_port(tmp_path: Path, env: OAuthEnv) -> None:
    t = env.target()
    t["smtp"] = t["smtp"] | {"host": "relay.nonexistent.invalid"}
    t["mailbox"] = t["mailbox"] | {"port": 9}
    code, out, _ = _run(tmp_path, env, t)
    steps = _steps(out)
    assert code == 2 and steps["dns"] == "ok"  # the mailbox host still resolves
    assert "FAIL  dns         cannot resolve relay.nonexistent.invalid" in out
    assert "FAIL  tcp         127.0.0.1:9" in out and "fix: check the port" in out


def test_bad_config_exits_3_with_path_named_errors(tmp_path: Path, env: OAuthEnv) -> None:
    t = env.target(mode="direct_send")  # keeps smtp.auth: a contradiction
    code, _out, err = _run(tmp_path, env, t)
    assert code == 3 and "targets[0].smtp.auth: not allowed with mode direct_send" in err


def test_password_login_where_only_oauth_works_fails_smtp_auth(
    tmp_path: Path, env: OAuthEnv
) -> None:
    pw = {"method": "password", "username": "sender@oauth.test", "password": "Pd3~not-accepted-x"}
    code, out, err = _run(tmp_path, env, env.target(smtp_auth=pw))
    assert code == 2 and _steps(out)["smtp-auth"] == "FAIL"
    assert "auth_failed: 535 5.7.8" in out and "smtp-token" not in _steps(out)
    assert "Pd3~not-accepted-x" not in out + err


def test_imap_mailbox_not_permitted_names_the_exchange_fix(tmp_path: Path, env: OAuthEnv) -> None:
    env.authority.clients["app-read"].permitted = False
    code, out, _ = _run(tmp_path, env, env.target())
    assert code == 2 and _steps(out)["imap-login"] == "FAIL" and _steps(out)["smtp-auth"] == "ok"
    assert "AUTHENTICATIONFAILED" in out and "-AccessRights FullAccess" in out


def test_cli_doctor_command(tmp_path: Path, env: OAuthEnv) -> None:
    import os
    import subprocess
    import sys

    path = tmp_path / "relayprobe.yml"
    data = {
        "tag_secret": "doctor-tag-secret-0123456789",
        "targets": [env.target(), env.target(name="bad", junk_folders=["Nope"])],
    }
    path.write_text(yaml.safe_dump(data))
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relayprobe", "doctor", "--config", str(path), *args],
            cwd=root,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = cli("--target", "oauth")
    assert good.returncode == 0 and "all checks passed" in good.stdout, good.stdout + good.stderr
    bad = cli("--target", "bad")
    assert bad.returncode == 2 and "missing 'Nope'" in bad.stdout
    assert cli("--target", "nosuch").returncode == 3
