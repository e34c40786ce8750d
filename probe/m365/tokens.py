"""Token sources for XOAUTH2: app-only or delegated OAuth, or a fixed token; the SASL string."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from probe.m365.app_only import AppOnlyProvider, clear_app_only_cache
from probe.m365.authority import CA_ENV
from probe.m365.delegated import DelegatedProvider, clear_delegated_states

if TYPE_CHECKING:
    from probe.config import Auth

#: An async callable that returns a current bearer token (SMTP and IMAP XOAUTH2).
TokenProvider = Callable[[], Awaitable[str]]


def token_provider(auth: Auth, *, ca_file: Path | None = None) -> TokenProvider:
    """An async callable returning a current access token for ``auth`` (method oauth2).

    Tokens are cached in memory per app and renewed before they expire; every provider for the
    same app and credential shares them, so SMTP and IMAP of one app use one token. ``ca_file``
    (or the ``RELAYPROBE_OAUTH_CA_FILE`` environment variable) replaces the trust store for the
    authority. With ``flow: device_code`` the tokens come from the user's sign-in kept in
    ``token_cache_file`` (probe/m365/delegated.py). Failures raise ``ProbeFailure`` at stage
    auth: ``oauth_unavailable`` when the authority cannot answer now (unreachable, 5xx, 429),
    ``oauth_token_failed`` when it refused (the AADSTS code picks the remedy); tokens and
    secrets never appear in messages or logs. A token a server refused is dropped through
    ``token_refused``.
    """
    if auth.method != "oauth2":
        raise ValueError(f'token_provider needs auth.method "oauth2", not "{auth.method}"')
    env_ca = os.environ.get(CA_ENV)
    ca = ca_file or (Path(env_ca) if env_ca else None)
    if auth.flow == "device_code":  # a user's sign-in kept by relayprobe login
        return DelegatedProvider(auth, ca)
    return AppOnlyProvider(auth, ca)


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


def token_refused(provider: TokenProvider | None, token: str) -> bool:
    """Tell ``provider`` a server refused ``token`` (it is dropped); True when asking again is
    worth one retry (the token came from a cache), False for a fresh or a fixed token."""
    refused = getattr(provider, "refused", None)
    return bool(refused is not None and refused(token))


def clear_token_cache() -> None:
    """Forget every cached token and loaded sign-in (tests; a reloaded configuration)."""
    clear_app_only_cache()
    clear_delegated_states()


def xoauth2_string(user: str, token: str) -> str:
    """The base64 SASL XOAUTH2 initial response as Microsoft documents it (docs/m365.md#xoauth2)."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
