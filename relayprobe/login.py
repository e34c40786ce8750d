"""``relayprobe login``: a user's device-code sign-in, its refresh token saved to a 0600 cache file."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from probe.m365.authority import CA_ENV, authority_of, explain_error, short_text
from probe.m365.delegated import (
    CacheFileError,
    delegated_remedy,
    load_cache,
    public_app,
    save_cache,
)
from relayprobe.selection import load_selected

if TYPE_CHECKING:
    from probe.config import Auth, Target


@dataclass
class _SignIn:
    """One device-code sign-in: the auth blocks of a target that share app, cache and user."""

    auth: Auth
    labels: list[str] = field(default_factory=list)
    scopes: set[str] = field(default_factory=set)


def _sign_ins(target: Target) -> list[_SignIn]:
    """SMTP first, then the mailbox; blocks with the same app, cache file and user sign in once."""
    out: dict[tuple[str, ...], _SignIn] = {}
    for label, auth in (("smtp", target.smtp.auth), ("mailbox", target.mailbox.auth)):
        if auth is None or auth.method != "oauth2" or auth.flow != "device_code":
            continue
        key = (
            str(auth.authority or auth.tenant_id),
            str(auth.client_id),
            str(auth.token_cache_file),
            auth.username.lower(),
        )
        one = out.setdefault(key, _SignIn(auth))
        one.labels.append(label)
        one.scopes.add(auth.scope)
    return list(out.values())


def run_login(
    path: str, target_name: str, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Sign in every device-code auth block of one target; 0 signed in, 2 failed, 3 bad config."""
    loaded = load_selected(path, [target_name], err=err)
    if loaded is None:
        return 3
    target = loaded[1][0]
    sign_ins = _sign_ins(target)
    if not sign_ins:
        print(
            f'relayprobe: target "{target.name}" has no auth block with method oauth2 and '
            "flow device_code: nothing to sign in (client credentials need no login)",
            file=err,
        )
        return 3
    command = shlex.join(
        ["relayprobe", "login", "--config", os.path.abspath(path), "--target", target.name]
    )
    for one in sign_ins:
        code = _sign_in(one, command, out, err)
        if code:
            return code
    return 0


def _sign_in(one: _SignIn, command: str, out: TextIO, err: TextIO) -> int:
    auth, what = one.auth, f"{' and '.join(one.labels)} ({one.auth.username})"
    path = Path(str(auth.token_cache_file))
    env_ca = os.environ.get(CA_ENV)

    def failed(problem: str, remedy: str) -> int:
        print(
            f"relayprobe: login for {what} at {authority_of(auth)}, client {auth.client_id} "
            f"failed: {problem}\nremedy: {remedy}",
            file=err,
        )
        return 2

    def entra_error(result: dict[str, Any]) -> int:
        codes = list(result.get("error_codes") or [])
        problem, generic = explain_error(
            auth, str(result.get("error")), str(result.get("error_description") or ""), codes
        )
        text = " ".join([f"AADSTS{codes[0]}" if codes else "", problem])
        return failed(problem, delegated_remedy(text, command) or generic)

    try:
        cache, _old, _stamp = load_cache(path)
    except CacheFileError as exc:
        return failed(str(exc), f"chmod 600 {path}, or delete it, then run {command}")
    try:
        app = public_app(auth, cache, Path(env_ca) if env_ca else None)
        flow = app.initiate_device_flow(scopes=sorted(one.scopes))
        if "user_code" not in flow:
            return entra_error(flow)
        print(f"Sign-in for {what}, permissions: {' '.join(sorted(one.scopes))}", file=out)
        print(
            flow.get("message")
            or f"open {flow.get('verification_uri')} and enter the code {flow['user_code']}",
            file=out,
            flush=True,
        )
        result = app.acquire_token_by_device_flow(flow)  # polls until the user is done
    except KeyboardInterrupt:
        return failed("interrupted before the sign-in finished", f"run {command} again")
    except Exception as exc:  # network, TLS, a broken authority: MSAL raises, it does not return
        return failed(
            f"{type(exc).__name__}: {short_text(exc)}",
            "check tenant_id/authority, the "
            f"outbound HTTPS proxy and firewall, and {CA_ENV} for a private authority",
        )
    if "access_token" not in result:
        return entra_error(result)
    try:
        save_cache(path, cache, command)
    except OSError as exc:
        return failed(
            f"cannot write the token cache {path}: {exc.strerror or exc}",
            "make its directory writable for this user",
        )
    claims = result.get("id_token_claims") or {}
    account = claims.get("preferred_username") or claims.get("upn") or "an unnamed account"
    print(f"Signed in as {account} for {what}; granted: {result.get('scope') or '-'}", file=out)
    print(
        f"Refresh token saved to {path} (mode 0600); the probe now gets tokens silently.", file=out
    )
    if str(account).lower() != auth.username.lower():
        print(
            f"note: {account} is not {auth.username}; XOAUTH2 logs in as {auth.username}, "
            f"so {account} needs Full Access (or Send As) on that mailbox",
            file=out,
        )
    return 0
