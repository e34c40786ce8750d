"""Delegated grants for the stand-in authority: device code, refresh token, revocation (like Entra)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.oauth.authority import Authority

DELEGATED_AUDIENCE = "https://outlook.office.com"
DELEGATED = {
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
}
RESERVED = {"openid", "profile", "offline_access"}
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class _Grant:
    """What one sign-in consented to; every refresh token issued from it points here."""

    client_id: str
    user: str
    scopes: set[str]
    revoked: bool = False


@dataclass
class DeviceGrants:
    """Public clients and their device codes; the "browser" approves on the ``pending``+1th poll.

    ``sign_in_as`` is a queue of users who complete the next sign-ins (else the client's user);
    ``pending`` is how many polls answer ``authorization_pending`` first (MSAL's polling loop).
    """

    authority: Authority
    public_clients: dict[str, str] = field(default_factory=dict)  # client_id -> default user
    sign_in_as: list[str] = field(default_factory=list)
    pending: int = 1
    refresh_tokens: list[str] = field(default_factory=list)  # every one issued (leak greps)
    _codes: dict[str, dict] = field(default_factory=dict)
    _grants: dict[str, _Grant] = field(default_factory=dict)  # refresh token -> grant
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_public_client(self, client_id: str, user: str) -> None:
        self.public_clients[client_id] = user

    def revoke(self, user: str | None = None) -> int:
        """Revoke every refresh token (of ``user``), like Revoke-MgUserSignInSession."""
        with self._lock:
            hit = [g for g in self._grants.values() if user in (None, g.user)]
            for g in hit:
                g.revoked = True
            return len(hit)

    def reset(self) -> None:
        with self._lock:
            self.sign_in_as.clear()
            self.pending = 1
            self._codes.clear()
            self._grants.clear()

    # --- endpoints -----------------------------------------------------------------------
    def devicecode(self, form: dict[str, str]) -> tuple[int, dict]:
        from tests.oauth.authority import _error

        client_id = form.get("client_id", "")
        if client_id not in self.public_clients:
            return _error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier "
                f"'{client_id}' was not found in the directory "
                f"'{self.authority.tenant}'.",
            )
        scopes = set(form.get("scope", "").split())
        unknown = scopes - DELEGATED - RESERVED
        if unknown or not scopes & DELEGATED:
            return _error(
                400,
                "invalid_scope",
                70011,
                f"The provided value for the input "
                f"parameter 'scope' is not valid: {' '.join(sorted(unknown))}",
            )
        user_code = secrets.token_hex(4).upper()
        device_code = secrets.token_urlsafe(32)
        with self._lock:
            self._codes[device_code] = {
                "client_id": client_id,
                "scopes": scopes & DELEGATED,
                "polls": 0,
            }
        uri = f"{self.authority.base}/devicelogin"
        return 200, {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": 900,
            "interval": 1,
            "message": f"To sign in, use a web browser to open the page {uri} and enter the "
            f"code {user_code} to authenticate.",
        }

    def token(self, form: dict[str, str]) -> tuple[int, dict]:
        from tests.oauth.authority import _error

        if form["grant_type"] == DEVICE_CODE_GRANT:
            with self._lock:
                code = self._codes.get(form.get("device_code", ""))
                if code is None or code["client_id"] != form.get("client_id"):
                    return _error(
                        400, "invalid_grant", 70000, "Provided grant is invalid or malformed."
                    )
                code["polls"] += 1
                if code["polls"] <= self.pending:
                    return _error(
                        400,
                        "authorization_pending",
                        70016,
                        "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                    )
                del self._codes[form["device_code"]]  # one use
                user = (
                    self.sign_in_as.pop(0)
                    if self.sign_in_as
                    else (self.public_clients[code["client_id"]])
                )
                grant = _Grant(code["client_id"], user, code["scopes"])
            return 200, self._issue(grant, code["scopes"], id_token=True)
        with self._lock:
            grant = self._grants.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != form.get("client_id"):
            return _error(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")
        if grant.revoked:
            return _error(
                400,
                "invalid_grant",
                50173,
                "The provided grant has expired due to "
                "it being revoked, a fresh auth token is needed. The user might have "
                "changed or reset their password.",
            )
        wanted = set(form.get("scope", "").split()) - RESERVED
        if not wanted <= grant.scopes:
            return _error(
                400,
                "invalid_grant",
                65001,
                "The user or administrator has not "
                f"consented to use the application with ID '{grant.client_id}'.",
            )
        return 200, self._issue(grant, wanted or grant.scopes, id_token=False)

    def _issue(self, grant: _Grant, scopes: set[str], *, id_token: bool) -> dict:
        """An access token Dovecot accepts (same key, ``email`` = user) plus a refresh token."""
        a, now = self.authority, int(time.time())
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, grant.user))
        claims = {
            "aud": DELEGATED_AUDIENCE,
            "iss": a.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + a.token_lifetime,
            "appid": grant.client_id,
            "tid": a.tenant,
            "sub": oid,
            "oid": oid,
            "upn": grant.user,
            "email": grant.user,
            "scp": " ".join(sorted(s.rsplit("/", 1)[1] for s in scopes)),
            "jti": secrets.token_hex(8),
            "xms_pad": base64.b64encode(secrets.token_bytes(a.pad_bytes * 3 // 4)).decode(),
        }
        refresh = "0.RT." + secrets.token_urlsafe(48)
        with self._lock:
            self._grants[refresh] = grant
            self.refresh_tokens.append(refresh)
        body = {
            "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
            "expires_in": a.token_lifetime,
            "ext_expires_in": a.token_lifetime,
            "access_token": a.sign(claims),
            "refresh_token": refresh,
            # MSAL keys its account on client_info (uid.utid) and names it from the id token.
            "client_info": _b64(json.dumps({"uid": oid, "utid": a.tenant})),
        }
        if id_token:
            body["id_token"] = a.sign(
                {
                    "aud": grant.client_id,
                    "iss": f"{a.base}/{a.tenant}/v2.0",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 3600,
                    "sub": oid,
                    "oid": oid,
                    "tid": a.tenant,
                    "preferred_username": grant.user,
                    "name": grant.user.split("@")[0],
                },
                record=False,
            )
        return body


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
