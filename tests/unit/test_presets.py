"""Relay-mode presets: defaults filled, contradictions refused with path-named errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from probe.config import ConfigError, parse_config

ENV = {"TAG": "a-tag-secret-of-enough-length"}
MX = "contoso-com.mail.protection.outlook.com"


def _cfg(mode: str | None, smtp: dict[str, Any], **target: Any):  # type: ignore[no-untyped-def]
    t: dict[str, Any] = {
        "name": "t",
        "smtp": smtp,
        "mail_from": "probe@contoso.com",
        "rcpt_to": "inbox@contoso.com",
        "mailbox": {
            "host": "127.0.0.1",
            "auth": {"method": "token", "username": "b", "token": "${TAG}"},
        },
    } | target
    if mode is not None:
        t["mode"] = mode
    return parse_config({"tag_secret": "${TAG}", "targets": [t]}, base_dir=Path("/"), environ=ENV)


def _errors(*args: Any, **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        _cfg(*args, **kw)
    return e.value.errors


OAUTH = {
    "method": "oauth2",
    "username": "probe@contoso.com",
    "tenant_id": "contoso.com",
    "client_id": "abc",
    "client_secret": "${TAG}",
}


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "c.crt").write_text("cert")
    (tmp_path / "c.key").write_text("key")
    return {"client_cert_file": str(tmp_path / "c.crt"), "client_key_file": str(tmp_path / "c.key")}


def test_submission_fills_microsofts_endpoint() -> None:
    s = _cfg("submission", {"auth": OAUTH}).targets[0].smtp
    assert (s.host, s.port, s.security) == ("smtp.office365.com", 587, "starttls")


def test_submission_refuses_implicit_tls_and_missing_auth() -> None:
    errs = _errors("submission", {"security": "tls", "auth": OAUTH})
    assert any(e.startswith('targets[0].smtp.security: "tls"') and "587" in e for e in errs)
    errs = _errors("submission", {"port": 465, "auth": OAUTH})
    assert "targets[0].smtp.port: 465 is not supported by smtp.office365.com; use 587" in errs
    errs = _errors("submission", {})
    assert any(e.startswith("targets[0].smtp.auth: required by mode submission") for e in errs)


def test_direct_send_needs_the_mx_host_and_fills_port_25() -> None:
    s = _cfg("direct_send", {"host": MX}).targets[0].smtp
    assert (s.host, s.port, s.security, s.auth) == (MX, 25, "starttls", None)
    errs = _errors("direct_send", {})
    assert any(e.startswith("targets[0].smtp.host: required by mode direct_send") for e in errs)
    errs = _errors("direct_send", {"host": "smtp.office365.com"})
    assert any("submission endpoint" in e for e in errs)


def test_direct_send_refuses_auth() -> None:
    errs = _errors("direct_send", {"host": MX, "auth": OAUTH})
    assert any(
        e.startswith("targets[0].smtp.auth: not allowed with mode direct_send") for e in errs
    )


def test_direct_send_warns_about_a_recipient_outside_the_tenant() -> None:
    c = _cfg("direct_send", {"host": MX}, rcpt_to="someone@gmail.com")
    assert any(w.startswith("targets[0].rcpt_to: direct send delivers only") for w in c.warnings)
    assert not _cfg("direct_send", {"host": MX}).warnings  # contoso.com is behind contoso-com


def test_connector_requires_a_client_certificate(certs: dict[str, str]) -> None:
    s = _cfg("connector", {"host": MX, **certs}).targets[0].smtp
    assert (s.port, s.security) == (25, "starttls") and s.client_cert_file is not None
    errs = _errors("connector", {"host": MX})
    assert any(
        e.startswith("targets[0].smtp.client_cert_file: required by mode connector") for e in errs
    )


def test_connector_refuses_plain_text_and_auth(certs: dict[str, str]) -> None:
    errs = _errors("connector", {"host": MX, "security": "none", **certs})
    assert any(
        e.startswith('targets[0].smtp.security: "none" is not allowed with mode connector')
        for e in errs
    )
    errs = _errors("connector", {"host": MX, "auth": OAUTH, **certs})
    assert any(e.startswith("targets[0].smtp.auth: not used by mode connector") for e in errs)


def test_without_an_explicit_mode_nothing_is_filled() -> None:
    errs = _errors(None, {})
    assert "targets[0].smtp.host: missing required key" in errs
    t = _cfg(None, {"host": "127.0.0.1", "port": 2525, "security": "none"}).targets[0]
    assert t.mode == "submission" and t.smtp.auth is None  # test relays keep working


def test_explicit_values_win_over_preset_defaults() -> None:
    s = _cfg("submission", {"host": "relay.internal", "port": 2587, "auth": OAUTH}).targets[0].smtp
    assert (s.host, s.port) == ("relay.internal", 2587)
