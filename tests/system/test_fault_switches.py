"""Proves every fault switch of the OAuth stand-in and the mail testbed on the wire."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import smtplib
import socket
import ssl
import time
from pathlib import Path

import jwt
import pytest
import requests

from tests.oauth.authority import SCOPE
from tests.oauth.fixture import (  # noqa: F401  (pytest fixtures)
    READ_SECRET,
    SEND_SECRET,
    SENDER,
    OAuthEnv,
    oauth,
    oauth_env,
)
from tests.testbed.api import Testbed

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
# Dovecot appends "[<hostname>:<local time>]" to this (login-common AUTH_TEMP_FAILED_MSG).
UNAVAILABLE = re.compile(
    r"NO \[UNAVAILABLE\] Temporary authentication failure\. "
    r"\[[^:\]]+:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]"
)
# Dovecot puts its post-login capabilities into the OK line.
LOGGED_IN = re.compile(r"OK (\[CAPABILITY [^\]]*\] )?Logged in")
TB_USER = "sender@probe.test"  # the testbed user the probes log in with least over IMAP


# --- raw protocol helpers ---------------------------------------------------------------------
def imap_reply(port: int, ca_file: Path, command: str, host: str = "127.0.0.1") -> str:
    """Send one command over implicit TLS; return its tagged reply, tag and CRLF cut off."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as sock,
        sock.makefile("rwb") as f,
    ):
        assert f.readline().startswith(b"* OK")
        f.write(f"a1 {command}\r\n".encode())
        f.flush()
        while True:
            line = f.readline()
            assert line, "server closed the connection"
            if line.startswith(b"+"):
                f.write(b"\r\n")  # answer a SASL error challenge with an empty response
                f.flush()
            elif line.startswith(b"a1 "):
                return line[3:].decode().rstrip("\r\n")


def xoauth2(user: str, token: str) -> str:
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


def imap_xoauth2(env: OAuthEnv, token: str, user: str = SENDER) -> str:
    return imap_reply(
        env.pair.imaps_port, env.ca_file, f"AUTHENTICATE XOAUTH2 {xoauth2(user, token)}"
    )


def smtp_xoauth2(env: OAuthEnv, token: str, user: str = SENDER) -> tuple[int, str]:
    """AUTH XOAUTH2 on the pair's submission port; the final reply (code, text)."""
    with smtplib.SMTP("127.0.0.1", env.pair.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(env.ca_file)))
        code, text = smtp.docmd("AUTH", f"XOAUTH2 {xoauth2(user, token)}")
        if code == 334:  # the SASL error challenge; an empty line ends the exchange
            code, text = smtp.docmd("")
        return code, text.decode()


def token_request(
    env: OAuthEnv, client: str = "app-send", secret: str = SEND_SECRET
) -> requests.Response:
    return requests.post(
        f"{env.authority.url}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client,
            "client_secret": secret,
            "scope": SCOPE,
        },
        verify=str(env.ca_file),
        timeout=10,
    )


def discovery(env: OAuthEnv) -> requests.Response:
    return requests.get(
        f"{env.authority.url}/v2.0/.well-known/openid-configuration",
        verify=str(env.ca_file),
        timeout=10,
    )


def assert_entra_error(body: dict, error: str, code: int, *, error_uri: bool = True) -> None:
    """Entra's layout: CRLF-separated Trace ID / Correlation ID / Timestamp lines."""
    text = body["error_description"]
    match = re.fullmatch(
        rf"AADSTS{code}: [^\r\n]+\.\r\nTrace ID: ({UUID})\r\nCorrelation ID: ({UUID})"
        rf"\r\nTimestamp: ({STAMP})",
        text,
    )
    assert match, text
    assert body["error"] == error and body["error_codes"] == [code]
    assert (body["trace_id"], body["correlation_id"], body["timestamp"]) == match.groups()
    uri = f"https://login.microsoftonline.com/error?code={code}"
    assert body.get("error_uri") == (uri if error_uri else None)


# --- OAuth stand-in -----------------------------------------------------------------------------
def test_every_entra_error_body_has_the_real_layout(oauth: OAuthEnv) -> None:  # noqa: F811
    wrong = token_request(oauth, secret="not-the-secret")
    assert wrong.status_code == 401
    assert_entra_error(wrong.json(), "invalid_client", 7000215)
    again = token_request(oauth, secret="not-the-secret").json()
    assert again["trace_id"] != wrong.json()["trace_id"]  # new ids on every answer
    assert again["correlation_id"] != wrong.json()["correlation_id"]
    tenant = requests.get(
        f"{oauth.authority.base}/no-such-tenant/v2.0/.well-known/openid-configuration",
        verify=str(oauth.ca_file),
        timeout=10,
    )
    assert tenant.status_code == 400
    assert_entra_error(tenant.json(), "invalid_tenant", 90002)
    device = requests.post(  # device.py answers through the same helper
        f"{oauth.authority.url}/oauth2/v2.0/devicecode",
        data={"client_id": "app-unknown", "scope": "https://outlook.office.com/SMTP.Send"},
        verify=str(oauth.ca_file),
        timeout=10,
    )
    assert_entra_error(device.json(), "unauthorized_client", 700016)


def test_outage_503_fails_only_the_token_endpoint(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.authority.outage("503")
    failed = token_request(oauth)
    assert failed.status_code == 503 and "Retry-After" not in failed.headers
    assert_entra_error(failed.json(), "temporarily_unavailable", 90033, error_uri=False)
    assert failed.json()["error_description"].startswith(
        "AADSTS90033: A transient error has occurred. Please try again.\r\nTrace ID: "
    )
    assert discovery(oauth).status_code == 200
    device = requests.post(  # only token requests fail (device-flow polling is one)
        f"{oauth.authority.url}/oauth2/v2.0/devicecode",
        data={"client_id": "app-public", "scope": "https://outlook.office.com/SMTP.Send"},
        verify=str(oauth.ca_file),
        timeout=10,
    )
    assert device.status_code == 200
    oauth.authority.restore()
    assert token_request(oauth).status_code == 200


def test_outage_429_sends_retry_after_and_an_entra_or_plain_body(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.authority.outage("429")
    throttled = token_request(oauth)
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "60")
    assert_entra_error(throttled.json(), "invalid_grant", 50196)
    assert discovery(oauth).status_code == 200
    oauth.authority.outage("429", retry_after=2, plain_429=True)
    plain = token_request(oauth)
    assert (plain.status_code, plain.headers["Retry-After"], plain.text) == (
        429,
        "2",
        "Too Many Requests",
    )
    assert plain.headers["Content-Type"].startswith("text/plain")
    oauth.authority.restore()
    assert token_request(oauth).status_code == 200


def test_outage_down_refuses_connections_and_restore_keeps_the_port(oauth: OAuthEnv) -> None:  # noqa: F811
    before = discovery(oauth).json()["token_endpoint"]
    port = int(oauth.authority.base.rsplit(":", 1)[1])
    oauth.authority.outage("down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(requests.ConnectionError):
        discovery(oauth)
    oauth.authority.restore()
    assert discovery(oauth).json()["token_endpoint"] == before  # cached URLs still work
    assert token_request(oauth).status_code == 200


def test_rotate_key_refuses_tokens_issued_before_on_imap_and_smtp(oauth: OAuthEnv) -> None:  # noqa: F811
    old = token_request(oauth).json()["access_token"]
    # Used first, so Dovecot has cached the old key: rotation must drop that cache too.
    assert LOGGED_IN.fullmatch(imap_xoauth2(oauth, old))
    assert smtp_xoauth2(oauth, old) == (235, "2.7.0 Authentication successful")
    old_kid = jwt.get_unverified_header(old)["kid"]
    new_kid = oauth.authority.rotate_key()
    assert new_kid != old_kid
    assert imap_xoauth2(oauth, old) == "NO [AUTHENTICATIONFAILED] Authentication failed."
    code, text = smtp_xoauth2(oauth, old)
    assert (code, text.split()[0]) == (535, "5.7.8")
    new = token_request(oauth).json()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert LOGGED_IN.fullmatch(imap_xoauth2(oauth, new))
    assert smtp_xoauth2(oauth, new) == (235, "2.7.0 Authentication successful")


def test_imap_unavailable_answers_temporary_failure(oauth: OAuthEnv) -> None:  # noqa: F811
    token = token_request(oauth).json()["access_token"]
    inbox_token = token_request(oauth, "app-read", READ_SECRET).json()["access_token"]
    oauth.pair.imap_unavailable(True)
    assert UNAVAILABLE.fullmatch(imap_xoauth2(oauth, token))
    assert UNAVAILABLE.fullmatch(imap_xoauth2(oauth, inbox_token, "inbox@oauth.test"))
    assert UNAVAILABLE.fullmatch(imap_xoauth2(oauth, "not-a-jwt"))  # before any validation
    assert smtp_xoauth2(oauth, token) == (235, "2.7.0 Authentication successful")
    oauth.pair.imap_unavailable(False)
    assert LOGGED_IN.fullmatch(imap_xoauth2(oauth, token))


# --- mail testbed -------------------------------------------------------------------------------
def imap_login(tb: Testbed, user: str) -> str:
    return imap_reply(tb.imap_tls_port, tb.ca_file, f'LOGIN "{user}" "{tb.users[user]}"')


def test_authtemp_switch_answers_unavailable_to_imap_login(tb_clean: Testbed) -> None:
    assert tb_clean.switch("authtemp", "on", TB_USER) == f"authtemp on for {TB_USER}"
    assert json.loads(tb_clean.switch("show"))["authtemp"] == {TB_USER: tb_clean.switch_owner}
    assert UNAVAILABLE.fullmatch(imap_login(tb_clean, TB_USER))
    assert LOGGED_IN.fullmatch(imap_login(tb_clean, "probe@probe.test"))  # other users unaffected
    with smtplib.SMTP(tb_clean.host, tb_clean.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=str(tb_clean.ca_file)))
        assert smtp.login(TB_USER, tb_clean.users[TB_USER])[0] == 235  # SMTP AUTH unaffected
    tb_clean.switch("authtemp", "off", TB_USER)
    assert LOGGED_IN.fullmatch(imap_login(tb_clean, TB_USER))
    tb_clean.switch("authtemp", "on", TB_USER)
    tb_clean.clear()  # clear removes it too (and waits until Dovecot sees that)
    assert LOGGED_IN.fullmatch(imap_login(tb_clean, TB_USER))


@pytest.mark.testbed_exclusive
def test_stopping_dovecot_drops_an_idling_client_and_start_brings_imap_back(
    tb_clean: Testbed,
) -> None:
    ctx = ssl.create_default_context(cafile=str(tb_clean.ca_file))
    raw = socket.create_connection((tb_clean.host, tb_clean.imap_tls_port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname=tb_clean.host) as sock, sock.makefile("rwb") as f:
        f.readline()  # greeting
        for tag, command in (
            ("a1", f'LOGIN "{TB_USER}" "{tb_clean.users[TB_USER]}"'),
            ("a2", "SELECT INBOX"),
            ("a3", "IDLE"),
        ):
            f.write(f"{tag} {command}\r\n".encode())
            f.flush()
            while not (line := f.readline()).startswith((tag.encode(), b"+")):
                pass
        assert line.startswith(b"+ idling"), line
        t0 = time.monotonic()
        try:
            tb_clean.stop_service("dovecot")
            stopped = time.monotonic() - t0
            tail: list[bytes] = []
            with contextlib.suppress(ConnectionResetError):  # EOF or reset: either way, gone
                while line := f.readline():
                    tail.append(line)
            dropped = time.monotonic() - t0
        finally:
            t1 = time.monotonic()
            tb_clean.start_service("dovecot")
            started = time.monotonic() - t1
    assert all(line.startswith(b"* ") for line in tail), tail  # at most untagged lines (BYE)
    assert stopped < 5 and dropped < 5 and started < 5, (stopped, dropped, started)
    assert LOGGED_IN.fullmatch(imap_login(tb_clean, TB_USER))  # serving when start returns
    print(
        f"stop {stopped:.2f} s, connection gone after {dropped:.2f} s ({tail!r}), "
        f"start {started:.2f} s"
    )
