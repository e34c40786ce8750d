"""Modes hve and acs end to end: their presets with the host overridden to the local relay."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from probe.config import Config, parse_config
from probe.m365 import tokens as oauth_mod
from probe.result import Reason, Stage, Status
from probe.roundtrip import run_probe
from tests.oauth.fixture import SENDER, OAuthEnv, oauth, oauth_env  # noqa: F401
from tests.system.probe_configs import target_dict
from tests.testbed.tbkit.config import ACS_LOGIN, ACS_SENDER

TAG = "hve-acs-test-tag-secret-0123456789"


def _config(tb: Any, target: dict[str, Any]) -> Config:
    """A config on the testbed with every password from the environment (none inline)."""
    environ = {
        "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
        "TB_ACS_PASSWORD": tb.users[ACS_LOGIN],
        "TAG": TAG,
    }
    data = {"instance": f"hve-acs-{secrets.token_hex(4)}", "tag_secret": "${TAG}"}
    return parse_config({**data, "targets": [target]}, base_dir=Path.cwd(), environ=environ)


def _relay(tb: Any) -> dict[str, Any]:
    """The preset's host overridden to the testbed submission port, trusting its CA."""
    return {"host": tb.host, "port": tb.submission_port, "ca_file": str(tb.ca_file)}


def _acs_target(tb: Any, **over: Any) -> dict[str, Any]:
    smtp = _relay(tb) | {
        "auth": {"method": "password", "username": ACS_LOGIN, "password": "${TB_ACS_PASSWORD}"}
    }
    target = target_dict(tb, name="acs", **({"mail_from": ACS_SENDER} | over))
    return target | {"mode": "acs", "smtp": smtp}


async def test_hve_with_a_password_delivers_through_the_local_relay(testbed: Any) -> None:
    target = target_dict(testbed, name="hve")
    target = target | {"mode": "hve", "smtp": _relay(testbed) | {"auth": target["smtp"]["auth"]}}
    config = _config(testbed, target)
    t = config.targets[0]
    assert (t.mode, t.cloud, t.smtp.security, t.smtp.port) == (
        "hve",
        "global",
        "starttls",
        testbed.submission_port,
    )
    assert config.warnings == []  # same domain: no "internal only" warning; no basic-auth one
    result = await run_probe(config, t)
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    assert result.smtp.tls_version in ("TLSv1.2", "TLSv1.3")  # HVE requires TLS 1.2 or 1.3


async def test_acs_style_username_is_accepted_by_the_relays_sasl(testbed: Any) -> None:
    config = _config(testbed, _acs_target(testbed))
    t = config.targets[0]
    assert t.mode == "acs" and t.smtp.auth is not None
    assert (t.smtp.auth.method, t.smtp.auth.username) == ("password", ACS_LOGIN)
    logged = f"sasl_username={ACS_LOGIN}"
    before = testbed.log("postfix").count(logged)
    result = await run_probe(config, t)
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    auth = result.verdict.auth
    assert (auth.spf, auth.dkim, auth.dmarc) == ("pass", "pass", "pass")
    assert testbed.log("postfix").count(logged) > before  # Postfix's SASL took that login


async def test_acs_login_may_send_only_as_its_verified_sender(testbed: Any) -> None:
    config = _config(testbed, _acs_target(testbed, mail_from="probe@probe.test"))
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.SUBMIT, Reason.SEND_AS_DENIED), result.message
    assert "not owned by user" in result.message


async def test_hve_with_xoauth2_through_the_oauth_stand_in(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config(oauth.target(mode="hve"))
    t = config.targets[0]
    assert t.mode == "hve" and t.smtp.auth is not None and t.smtp.auth.method == "oauth2"
    assert t.smtp.auth.scope == "https://outlook.office365.com/.default"  # the global cloud's
    # sender@ and inbox@oauth.test: internal, no warning (the stand-in's secrets are inline).
    assert [w for w in config.warnings if "inline secret" not in w] == []
    smtp_token = oauth_mod.token_provider(t.smtp.auth, ca_file=oauth.ca_file)
    imap_token = oauth_mod.token_provider(t.mailbox.auth, ca_file=oauth.ca_file)
    result = await run_probe(config, t, smtp_token=smtp_token, imap_token=imap_token)
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    assert oauth.authority.token_count("app-send") == 1
    assert f"sasl_method=XOAUTH2, sasl_username={SENDER}" in oauth.pair.log_text()
