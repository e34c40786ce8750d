"""Delegated OAuth (device-code sign-in): the refresh token kept in a 0600 file, used silently."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.failure import ProbeFailure
from probe.m365.authority import (
    authority_of,
    error_failure,
    explain_error,
    explain_exception,
    http_client,
    is_transient,
    short_text,
    token_failure,
)
from probe.m365.codes import aadsts_remedy
from probe.result import Reason, Stage

if TYPE_CHECKING:
    from probe.config import Auth

log = logging.getLogger("relayprobe.oauth")

GENERIC_LOGIN = "relayprobe login --config <config file> --target <target name>"
#: Entra errors that mean "the stored sign-in is no good any more": only a new sign-in helps.
SIGN_IN_AGAIN = {
    "AADSTS50173": "the refresh token was revoked (password change, sign-out everywhere)",
    "AADSTS700082": "the refresh token expired (unused for 90 days)",
    "AADSTS70008": "the refresh token expired",
    "AADSTS50076": "multi-factor authentication is now required",
    "AADSTS50078": "multi-factor authentication is now required",
    "AADSTS70000": "the stored grant is invalid",
}
#: Device-code specific remedies (the app-only ones live in probe/m365/codes.py).
DELEGATED_REMEDIES = {
    "AADSTS7000218": "the app is not a public client: in Entra, App registrations -> the app -> "
    "Authentication -> Allow public client flows = Yes",
    "AADSTS65001": "the delegated permissions are not consented: grant admin consent for "
    "Office 365 Exchange Online SMTP.Send and IMAP.AccessAsUser.All on the app",
    "AADSTS70016": "the sign-in was not completed in time: run relayprobe login again",
    "AADSTS70019": "the device code expired before the sign-in finished: run relayprobe login again",
    "AADSTS50126": "wrong user name or password at the sign-in page: run relayprobe login again",
}


class CacheFileError(Exception):
    """The token cache file cannot be used (permissions, unreadable, not ours); says what to do."""


# --- the cache file ------------------------------------------------------------------------
def check_private(path: Path) -> os.stat_result | None:
    """The file's stat if it exists; CacheFileError if group or others may access it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheFileError(
            f"token cache {path}: cannot read it ({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise CacheFileError(f"token cache {path}: not a regular file")
    if st.st_mode & 0o077:
        raise CacheFileError(
            f"token cache {path} is refused: mode {stat.S_IMODE(st.st_mode):04o} lets group or "
            f"others read it, and it holds a refresh token (as good as a password): run "
            f"chmod 600 {path}, and if others may have read it, revoke the user's sessions "
            "(Revoke-MgUserSignInSession) and run relayprobe login again"
        )
    return st


def load_cache(path: Path) -> tuple[Any, str | None, tuple[int, int]]:
    """(MSAL SerializableTokenCache, login command recorded in it, file stamp) from ``path``."""
    import msal

    cache = msal.SerializableTokenCache()
    st = check_private(path)
    if st is None:
        return cache, None, (0, 0)
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError) as exc:
        raise CacheFileError(
            f"token cache {path}: unreadable ({short_text(exc)}); delete it and "
            "run relayprobe login again"
        ) from None
    # Our wrapper (login command + MSAL's cache); a bare MSAL cache file is accepted too.
    inner = data.get("msal", data) if isinstance(data, dict) else {}
    cache.deserialize(json.dumps(inner))
    login = data.get("login") if isinstance(data, dict) else None
    return cache, login if isinstance(login, str) else None, (st.st_mtime_ns, st.st_ino)


def save_cache(path: Path, cache: Any, login: str | None) -> tuple[int, int]:
    """Write the cache atomically with mode 0600 (a reader never sees half a file); its stamp."""
    body = {"login": login, "msal": json.loads(cache.serialize() or "{}")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or a leftover file's mode
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = path.stat()
    return st.st_mtime_ns, st.st_ino


def public_app(auth: Auth, cache: Any, ca_file: Path | None, *, http: Any = None) -> Any:
    """MSAL's public client for ``auth`` (device-code flow) on ``cache``."""
    import msal

    kw: dict[str, Any] = {"instance_discovery": False} if auth.authority else {}
    return msal.PublicClientApplication(
        auth.client_id,
        authority=authority_of(auth),
        token_cache=cache,
        http_client=http if http is not None else http_client(ca_file),
        **kw,
    )


def pick_account(accounts: list[dict], username: str) -> dict | None:
    """The cached account for ``username``; the only one when none matches (shared mailbox)."""
    for account in accounts:
        if str(account.get("username", "")).lower() == username.lower():
            return account
    return accounts[0] if len(accounts) == 1 else None


def delegated_remedy(text: str, login: str) -> str | None:
    """The remedy for an Entra error in a delegated flow, None when nothing specific is known."""
    for code, why in SIGN_IN_AGAIN.items():
        if re.search(rf"\b{code}\b", text):
            return f"{why}: sign in again with {login}"
    for code, remedy in DELEGATED_REMEDIES.items():
        if re.search(rf"\b{code}\b", text):
            return remedy
    known = aadsts_remedy(text)
    if known:
        return known[1]
    return f"sign in again with {login}" if "invalid_grant" in text else None


# --- the token provider ----------------------------------------------------------------------
@dataclass
class _State:
    app: Any
    cache: Any
    login: str | None
    stamp: tuple[int, int]
    http: Any = None  # the app's HTTP session (its last answer explains a 5xx or 429)
    # A server refused the cached access token: redeem the refresh token for a new one.
    force_refresh: bool = False
    token: str | None = None


# One MSAL app per (authority, client, cache file, CA): SMTP and IMAP of one target share it.
_STATES: dict[tuple[str, ...], _State] = {}
_LOCK = threading.Lock()


class DelegatedProvider:
    """Access tokens for a signed-in user: MSAL's cache first, else the refresh-token grant."""

    def __init__(self, auth: Auth, ca_file: Path | None) -> None:
        assert auth.token_cache_file is not None and auth.client_id is not None
        self.auth = auth
        self.path = Path(auth.token_cache_file)
        self.ca_file = ca_file
        self.key = (authority_of(auth), auth.client_id, str(self.path), str(ca_file))
        self.fresh: str | None = None  # as AppOnlyProvider.fresh: issued for the last call

    async def __call__(self) -> str:
        self.fresh = None
        return await asyncio.to_thread(self._fetch)

    def _fail(self, what: str, remedy: str) -> ProbeFailure:
        return token_failure(self.auth, f"{what} (token cache {self.path})", remedy)

    def _state(self) -> _State:
        state = _STATES.get(self.key)
        try:
            st = check_private(self.path)
            stamp = (st.st_mtime_ns, st.st_ino) if st else (0, 0)
            if state is None or state.stamp != stamp:  # first use, or relayprobe login ran again
                cache, login, stamp = load_cache(self.path)
                http = http_client(self.ca_file)
                app = public_app(self.auth, cache, self.ca_file, http=http)
                state = _STATES[self.key] = _State(app, cache, login, stamp, http)
        except CacheFileError as exc:
            _STATES.pop(self.key, None)
            raise ProbeFailure.at(
                Stage.AUTH,
                Reason.OAUTH_TOKEN_FAILED,
                None,
                str(exc),
                remedy=f"chmod 600 {self.path}, or delete it and run {GENERIC_LOGIN}",
            ) from None
        except Exception as exc:  # MSAL discovers the tenant when built: network, TLS
            _STATES.pop(self.key, None)
            raise explain_exception(self.auth, exc) from None
        return state

    def _fetch(self) -> str:
        with _LOCK:
            state = self._state()
            login = state.login or GENERIC_LOGIN
            user = self.auth.username
            account = pick_account(state.app.get_accounts(), user)
            if account is None:
                what = "no sign-in stored" if state.stamp == (0, 0) else f"no account for {user}"
                raise self._fail(what, f"sign in once with {login}")
            try:
                result = state.app.acquire_token_silent_with_error(
                    [self.auth.scope], account, force_refresh=state.force_refresh
                )
            except Exception as exc:
                _STATES.pop(self.key, None)
                raise explain_exception(self.auth, exc, http=state.http) from None
            if not result:
                raise self._fail(
                    f"no refresh token cached for {account.get('username')}",
                    f"sign in again with {login}",
                )
            if "access_token" not in result:
                codes = list(result.get("error_codes") or [])
                what, generic = explain_error(
                    self.auth,
                    str(result.get("error")),
                    str(result.get("error_description") or ""),
                    codes,
                )
                text = " ".join([f"AADSTS{codes[0]}" if codes else "", what])
                status = getattr(state.http, "last_status", None)
                if is_transient(str(result.get("error")), codes, status):
                    raise error_failure(self.auth, result, status=status)
                raise self._fail(what, delegated_remedy(text, login) or generic)
            state.force_refresh = False
            state.token = str(result["access_token"])
            if result.get("token_source", "identity_provider") != "cache":
                self.fresh = state.token
            if state.cache.has_state_changed:  # a refresh: keep the (rotated) refresh token
                state.stamp = self._save(state)
            log.info(
                "oauth: delegated token for %s (client %s, %s)",
                account.get("username"),
                self.auth.client_id,
                result.get("token_source", "identity_provider"),
            )
            return str(result["access_token"])

    def refused(self, token: str) -> bool:
        """A server refused ``token``: the next call redeems the refresh token for a new one.
        True when the refused token was not fresh (worth one more try), else False."""
        with _LOCK:
            state = _STATES.get(self.key)
            if state is not None and state.token == token:
                state.force_refresh, state.token = True, None
            return token != self.fresh

    def _save(self, state: _State) -> tuple[int, int]:
        try:
            st = check_private(self.path)
            if st is not None and (st.st_mtime_ns, st.st_ino) != state.stamp:
                return state.stamp  # relayprobe login wrote it meanwhile: its sign-in wins
            stamp = save_cache(self.path, state.cache, state.login)
            state.cache.has_state_changed = False
            return stamp
        except (OSError, CacheFileError) as exc:
            # The token is good now; the next refresh tries again. Say so: it needs fixing.
            log.warning("oauth: cannot save token cache %s: %s", self.path, short_text(exc))
            return state.stamp


def clear_delegated_states() -> None:
    """Forget the loaded caches (tests; a reloaded configuration)."""
    with _LOCK:
        _STATES.clear()
