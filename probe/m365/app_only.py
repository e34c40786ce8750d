"""App-only OAuth (MSAL client credentials): tokens cached per app and renewed before expiry."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.m365.authority import authority_of, error_failure, explain_exception, http_client

if TYPE_CHECKING:
    from probe.config import Auth

log = logging.getLogger("relayprobe.oauth")

#: Renew this many seconds before expiry (capped at a quarter of the lifetime for short tokens).
RENEW_BEFORE = 300.0


@dataclass
class _Entry:
    """One cached token and the MSAL app that fetched it (reused: MSAL keeps its own cache too)."""

    app: Any = None
    http: Any = None  # the app's HTTP session (remembers the last status for 429/5xx)
    token: str | None = None
    renew_at: float = 0.0  # time.monotonic() after which a fresh token is fetched
    expires_at: float = 0.0


# One entry per (authority, client, credential, scope, CA): SMTP and IMAP of one app share it.
_CACHE: dict[tuple[str, ...], _Entry] = {}
_LOCK = threading.Lock()  # serialises fetches; held only in worker threads, never on the loop


def _credential(auth: Auth) -> tuple[str | dict[str, str], str]:
    """MSAL's client_credential and a fingerprint of it for the cache key (never the secret)."""
    if auth.client_secret is not None:
        secret = auth.client_secret.get()
        return secret, "s:" + hashlib.sha256(secret.encode()).hexdigest()
    assert auth.certificate_file is not None and auth.thumbprint is not None
    pem = Path(auth.certificate_file).read_text(encoding="utf-8")
    # The file may hold the certificate too; MSAL wants the private key block.
    match = re.search(
        r"-----BEGIN (?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----.*?-----END "
        r"(?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----",
        pem,
        re.S,
    )
    key = match.group(0) if match else pem
    cred: dict[str, str] = {"private_key": key, "thumbprint": auth.thumbprint}
    if auth.certificate_passphrase is not None:
        cred["passphrase"] = auth.certificate_passphrase.get()
    digest = hashlib.sha256((key + auth.thumbprint).encode()).hexdigest()
    return cred, "c:" + digest


class AppOnlyProvider:
    """Fetches tokens for one auth block; all MSAL calls run in worker threads (they block)."""

    def __init__(self, auth: Auth, ca_file: Path | None) -> None:
        self.auth = auth
        self.ca_file = ca_file
        self.authority = authority_of(auth)
        cred, fingerprint = _credential(auth)
        self.credential = cred
        self.key = (self.authority, auth.client_id or "", fingerprint, auth.scope, str(ca_file))
        secret_values = [cred] if isinstance(cred, str) else [cred.get("passphrase", "")]
        self.secrets = tuple(s for s in secret_values if s)
        # The token the authority issued for this provider's last call, None when that call was
        # served from a cache: a server refusing a *fresh* token means the configuration is
        # wrong; refusing a cached one may only mean it went stale (docs/architecture.md,
        # "Reasons": auth_failed).
        self.fresh: str | None = None

    async def __call__(self) -> str:
        self.fresh = None
        entry = _CACHE.get(self.key)
        if entry is not None and entry.token and time.monotonic() < entry.renew_at:
            return entry.token
        return await asyncio.to_thread(self._fetch)

    def _app(self, entry: _Entry) -> Any:
        import msal

        if entry.app is None:
            kw: dict[str, Any] = {}
            if self.auth.authority:
                kw["instance_discovery"] = False  # a custom authority: no Microsoft discovery
            entry.http = http_client(self.ca_file)
            entry.app = msal.ConfidentialClientApplication(
                self.auth.client_id,
                client_credential=self.credential,
                authority=self.authority,
                http_client=entry.http,
                **kw,
            )
        return entry.app

    def _fetch(self) -> str:
        with _LOCK:
            entry = _CACHE.setdefault(self.key, _Entry())
            now = time.monotonic()
            if entry.token and now < entry.renew_at:
                return entry.token  # another caller renewed it while we waited
            started = time.monotonic()
            try:
                result = self._app(entry).acquire_token_for_client(scopes=[self.auth.scope])
            except Exception as exc:
                failure = explain_exception(self.auth, exc, self.secrets, http=entry.http)
                entry.app = None  # a failure must not stick (MSAL replays a 5xx for 60 s)
                raise failure from None
            if "access_token" not in result:
                status = getattr(entry.http, "last_status", None)
                raise error_failure(self.auth, result, status=status, secrets=self.secrets)
            lifetime = float(result.get("expires_in") or 0)
            entry.token = result["access_token"]
            if result.get("token_source", "identity_provider") != "cache":
                self.fresh = entry.token
            entry.expires_at = started + lifetime
            entry.renew_at = entry.expires_at - min(RENEW_BEFORE, lifetime / 4)
            log.info(
                "oauth: token for client %s from %s (%s, valid %.0f s) in %.3f s",
                self.auth.client_id,
                self.authority,
                result.get("token_source", "identity_provider"),
                lifetime,
                time.monotonic() - started,
            )
            return entry.token

    def refused(self, token: str) -> bool:
        """A server refused ``token``: drop it (and MSAL's copy). True when it came from a cache,
        so asking again gets a new one worth trying; False when the authority issued it for
        this very call."""
        with _LOCK:
            entry = _CACHE.get(self.key)
            stale = token != self.fresh
            if entry is None or entry.token != token:
                return stale  # already replaced by another caller: the next call gets that one
            entry.token, entry.renew_at, entry.app = None, 0.0, None  # MSAL caches it as well
            log.info(
                "oauth: a server refused the %s token for client %s; dropped",
                "cached" if stale else "fresh",
                self.auth.client_id,
            )
            return stale


def clear_app_only_cache() -> None:
    """Forget every cached app-only token."""
    with _LOCK:
        _CACHE.clear()
