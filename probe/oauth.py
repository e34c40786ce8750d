"""OAuth access tokens for XOAUTH2 from Microsoft Entra ID (MSAL client credentials), cached and renewed."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.errors import ProbeFailure
from probe.m365_codes import aadsts_remedy
from probe.result import Reason, Stage

if TYPE_CHECKING:
    from probe.config import Auth

log = logging.getLogger("relayprobe.oauth")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
#: Trust this PEM CA bundle (alone) for the token authority; tests and private authorities.
CA_ENV = "RELAYPROBE_OAUTH_CA_FILE"
#: Renew this many seconds before expiry (capped at a quarter of the lifetime for short tokens).
RENEW_BEFORE = 300.0
HTTP_TIMEOUT = 30.0

TokenProvider = Callable[[], Awaitable[str]]


@dataclass
class _Entry:
    """One cached token and the MSAL app that fetched it (reused: MSAL keeps its own cache too)."""

    app: Any = None
    token: str | None = None
    renew_at: float = 0.0  # time.monotonic() after which a fresh token is fetched
    expires_at: float = 0.0


# One entry per (authority, client, credential, scope, CA): SMTP and IMAP of one app share it.
_CACHE: dict[tuple[str, ...], _Entry] = {}
_LOCK = threading.Lock()  # serialises fetches; held only in worker threads, never on the loop


def authority_of(auth: Auth) -> str:
    """The authority URL: the configured one (sovereign clouds, tests) or Entra's for tenant_id."""
    return (auth.authority or f"{DEFAULT_AUTHORITY}{auth.tenant_id}").rstrip("/")


def _credential(auth: Auth) -> tuple[str | dict[str, str], str]:
    """MSAL's client_credential and a fingerprint of it for the cache key (never the secret)."""
    if auth.client_secret is not None:
        secret = auth.client_secret.get()
        return secret, "s:" + hashlib.sha256(secret.encode()).hexdigest()
    assert auth.certificate_file is not None and auth.thumbprint is not None
    pem = Path(auth.certificate_file).read_text(encoding="utf-8")
    # The file may hold the certificate too; MSAL wants the private key block.
    match = re.search(r"-----BEGIN (?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----.*?-----END "
                      r"(?:ENCRYPTED |RSA |EC )?PRIVATE KEY-----", pem, re.S)  # fmt: skip
    key = match.group(0) if match else pem
    cred: dict[str, str] = {"private_key": key, "thumbprint": auth.thumbprint}
    if auth.certificate_passphrase is not None:
        cred["passphrase"] = auth.certificate_passphrase.get()
    digest = hashlib.sha256((key + auth.thumbprint).encode()).hexdigest()
    return cred, "c:" + digest


def _http_client(ca_file: Path | None) -> Any:
    import requests

    session = requests.Session()
    # Bound per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
    # (OAUTH-NOTES pitfall 2), but never an explicit request argument.
    kw: dict[str, Any] = {"timeout": HTTP_TIMEOUT}
    if ca_file is not None:
        kw["verify"] = str(ca_file)
    session.request = functools.partial(session.request, **kw)  # type: ignore[method-assign]
    return session


def _fail(auth: Auth, what: str, remedy: str, secrets: tuple[str, ...] = ()) -> ProbeFailure:
    message = f"auth: token from {authority_of(auth)} for client {auth.client_id} failed: {what}"
    for s in secrets:  # defence in depth: nothing below should echo a secret, but never let it
        if s:
            message = message.replace(s, "<secret>")
            remedy = remedy.replace(s, "<secret>")
    return ProbeFailure(Stage.AUTH, Reason.OAUTH_TOKEN_FAILED, message, remedy=remedy)


def _explain(auth: Auth, error: str, description: str, codes: list[int]) -> tuple[str, str]:
    """(what failed, remedy) from an Entra error; the AADSTS code picks the remedy."""
    first = description.split(" Trace ID:")[0].strip() or error
    code = f"AADSTS{codes[0]}" if codes else None
    known = aadsts_remedy(code or first)
    if known:
        return f"{error}: {first}", known[1]
    return f"{error}: {first}", (
        "look up the AADSTS code at https://login.microsoftonline.com/error and check "
        "tenant_id, client_id and the credential of this auth block"
    )


class _Fetcher:
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

    async def __call__(self) -> str:
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
            entry.app = msal.ConfidentialClientApplication(
                self.auth.client_id,
                client_credential=self.credential,
                authority=self.authority,
                http_client=_http_client(self.ca_file),
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
                entry.app = None  # a constructor failure must not stick
                raise self._exception(exc) from None
            if "access_token" not in result:
                raise _fail(self.auth, *_explain(self.auth, str(result.get("error")),
                            str(result.get("error_description") or ""),
                            list(result.get("error_codes") or [])), self.secrets)  # fmt: skip
            lifetime = float(result.get("expires_in") or 0)
            entry.token = result["access_token"]
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

    def _exception(self, exc: Exception) -> ProbeFailure:
        return explain_exception(self.auth, exc, self.secrets)


def explain_exception(auth: Auth, exc: Exception, secrets: tuple[str, ...] = ()) -> ProbeFailure:
    """The ProbeFailure for an exception MSAL raised (network, TLS, key, AADSTS in the text)."""
    import requests

    chain, e = [], exc
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(x) for x in chain)
    known = aadsts_remedy(text)
    if known:
        code, remedy = known
        return _fail(auth, f"{code} ({type(exc).__name__})", remedy, secrets)
    if "InvalidKeyError" in {type(x).__name__ for x in chain} or "private key" in text.lower():
        return _fail(auth, f"the certificate_file key cannot sign ({_short(exc)})",
                     "certificate_file must hold the app certificate's RSA private key in PEM "
                     "(openssl pkcs12 -in app.pfx -out app.pem -nodes) and "
                     "certificate_passphrase must match", secrets)  # fmt: skip
    if any(isinstance(x, requests.exceptions.SSLError) for x in chain):
        return _fail(auth, f"TLS to the authority failed ({_short(exc)})",
                     f"trust the authority's CA ({CA_ENV}=FILE) or fix its certificate",
                     secrets)  # fmt: skip
    if any(isinstance(x, requests.exceptions.RequestException | OSError) for x in chain):
        return _fail(auth, f"cannot reach the authority ({_short(exc)})",
                     "check DNS, the outbound HTTPS proxy and firewall towards the "
                     "authority; it retries on the next run", secrets)  # fmt: skip
    return _fail(auth, f"{type(exc).__name__}: {_short(exc)}",
                 "check tenant_id/authority and the credential", secrets)  # fmt: skip


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def token_provider(auth: Auth, *, ca_file: Path | None = None) -> TokenProvider:
    """An async callable returning a current access token for ``auth`` (method oauth2).

    Tokens are cached in memory per app and renewed before they expire; every provider for the
    same app and credential shares them, so SMTP and IMAP of one app use one token. ``ca_file``
    (or the ``RELAYPROBE_OAUTH_CA_FILE`` environment variable) replaces the trust store for the
    authority. With ``flow: device_code`` the tokens come from the user's sign-in kept in
    ``token_cache_file`` (probe/oauth_delegated.py). Failures raise ``ProbeFailure(Stage.AUTH, Reason.OAUTH_TOKEN_FAILED, ...)`` with a
    remedy picked by the AADSTS code; tokens and secrets never appear in messages or logs.
    """
    if auth.method != "oauth2":
        raise ValueError(f'token_provider needs auth.method "oauth2", not "{auth.method}"')
    env_ca = os.environ.get(CA_ENV)
    ca = ca_file or (Path(env_ca) if env_ca else None)
    if auth.flow == "device_code":  # a user's sign-in from relayprobe login (oauth_delegated)
        from probe.oauth_delegated import delegated_provider

        return delegated_provider(auth, ca)
    return _Fetcher(auth, ca)


def provider_for(auth: Auth | None, *, ca_file: Path | None = None) -> TokenProvider | None:
    """The token source an auth block needs: MSAL for oauth2, the fixed token for token, else None."""
    if auth is None or auth.method == "password":
        return None
    if auth.method == "token":
        fixed = auth.token

        async def static() -> str:
            return fixed.get() if fixed is not None else ""

        return static
    return token_provider(auth, ca_file=ca_file)


def clear_cache() -> None:
    """Forget every cached token (tests; a reloaded configuration)."""
    with _LOCK:
        _CACHE.clear()
    from probe.oauth_delegated import clear_states

    clear_states()


def xoauth2_string(user: str, token: str) -> str:
    """The base64 SASL XOAUTH2 initial response, as Microsoft documents it (M365.md §2.2)."""
    import base64

    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
