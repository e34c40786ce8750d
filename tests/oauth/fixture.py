"""Pytest fixtures for the OAuth stand-in: import ``oauth_env`` (and ``oauth``) into a test module."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from probe.config import Config, parse_config
from probe.m365 import tokens as oauth_mod
from tests.oauth.authority import Authority, thumbprint_of
from tests.oauth.mailpair import MailPair

# Test-only credentials (not secrets of anything real); distinctive so leak greps can find them.
SEND_SECRET = "Sx8~test-secret-SEND-7f3a9c1e"
READ_SECRET = "Rq2~test-secret-READ-0b4d6e8f"
TAG_SECRET = "oauth-stand-in-tag-secret-0123456789"
SENDER, INBOX, OTHER = "sender@oauth.test", "inbox@oauth.test", "other@oauth.test"


@dataclass
class OAuthEnv:
    """The running stand-in: authority, mail pair and the app credentials registered on it."""

    authority: Authority
    pair: MailPair
    app_cert_pem: Path  # private key + certificate of the certificate-credential app
    app_cert_thumbprint: str

    @property
    def ca_file(self) -> Path:
        return self.pair.ca_file

    def auth(self, client: str = "app-send", **over: Any) -> dict[str, Any]:
        """An oauth2 auth block (YAML-shaped) for a registered client."""
        base: dict[str, Any] = {"method": "oauth2", "authority": self.authority.url}
        if client == "app-send":
            base |= {"username": SENDER, "client_id": "app-send", "client_secret": SEND_SECRET}
        elif client == "app-read":
            base |= {"username": INBOX, "client_id": "app-read", "client_secret": READ_SECRET}
        elif client == "app-cert":
            base |= {
                "username": SENDER,
                "client_id": "app-cert",
                "certificate_file": str(self.app_cert_pem),
                "thumbprint": self.app_cert_thumbprint,
            }
        return base | over

    def target(self, *, smtp_auth: dict | None = None, **over: Any) -> dict[str, Any]:
        t: dict[str, Any] = {
            "name": "oauth",
            "mode": "submission",
            "smtp": {
                "host": "127.0.0.1",
                "port": self.pair.submission_port,
                "security": "starttls",
                "ca_file": str(self.ca_file),
                "auth": smtp_auth or self.auth("app-send"),
            },
            "mail_from": SENDER,
            "rcpt_to": INBOX,
            "mailbox": {
                "host": "127.0.0.1",
                "port": self.pair.imaps_port,
                "security": "tls",
                "ca_file": str(self.ca_file),
                "auth": self.auth("app-read"),
            },
            "timeout": 20,
        }
        return t | over

    def config(self, *targets: dict[str, Any]) -> Config:
        data = {
            "instance": "oauth-test",
            "tag_secret": TAG_SECRET,
            "targets": list(targets) or [self.target()],
        }
        return parse_config(data, base_dir=Path("/"), environ={})

    def reset(self) -> None:
        self.authority.restore()
        self.authority.token_lifetime = 3600
        self.authority.issued.clear()
        self.authority.requests.clear()  # each test counts only its own requests
        self.pair.reject_direct_send(False)
        self.pair.imap_unavailable(False)
        for c in self.authority.clients.values():
            c.permitted = True
        self.authority.device.reset()
        oauth_mod.clear_token_cache()


_shared: list[OAuthEnv] = []  # one running stand-in per process
_users = [0]


def _start() -> OAuthEnv:
    ca = trustme.CA()
    authority = Authority(ca).start()
    # Not under pytest's tmp dir: that is 0700, and Postfix/Dovecot run as their own users.
    state = Path(tempfile.mkdtemp(prefix="relayprobe-oauth-"))
    pair = MailPair(state, ca)
    pair.build(authority.write_dovecot_key)
    started = time.monotonic()
    try:
        pair.start()
    except BaseException:
        authority.stop()
        shutil.rmtree(state, ignore_errors=True)
        raise
    pair.started_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    authority.on_key_change = pair.restart_auth  # rotate_key(): Dovecot caches keys
    authority.add_secret_client("app-send", SEND_SECRET, SENDER)
    authority.add_secret_client("app-read", READ_SECRET, INBOX)
    # Entra app certificates are RSA (client assertions are RS256/PS256).
    app_cert = ca.issue_cert("relayprobe-app.oauth.test", key_type=trustme.KeyType.RSA)
    pem = state / "app-cert.pem"
    pem.write_bytes(app_cert.private_key_pem.bytes() + app_cert.cert_chain_pems[0].bytes())
    pem.chmod(0o600)
    authority.add_cert_client("app-cert", app_cert.cert_chain_pems[0].bytes(), SENDER)
    authority.device.add_public_client("app-public", SENDER)  # device-code sign-ins
    return OAuthEnv(authority, pair, pem, thumbprint_of(app_cert.cert_chain_pems[0].bytes()))


@pytest.fixture(scope="session")
def oauth_env() -> Iterator[OAuthEnv]:
    # Every test module imports this fixture, and pytest then keeps one "session" instance per
    # module; they share one running stand-in (fixed ports), stopped when the last one ends.
    if not _shared:
        _shared.append(_start())
    _users[0] += 1
    env = _shared[0]
    try:
        yield env
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _shared.clear()
            env.pair.stop()
            env.authority.stop()
            shutil.rmtree(env.pair.state, ignore_errors=True)


@pytest.fixture
def oauth(oauth_env: OAuthEnv) -> Iterator[OAuthEnv]:
    """The stand-in with switches reset and the token cache empty, before and after the test."""
    oauth_env.reset()
    yield oauth_env
    oauth_env.reset()
