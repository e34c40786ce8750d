"""The Microsoft Entra authority: its URL, the HTTP client MSAL uses, and its errors explained."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.failure import ProbeFailure
from probe.m365.codes import aadsts_remedy
from probe.result import Reason, Stage

if TYPE_CHECKING:
    from probe.config import Auth

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
#: Trust this PEM CA bundle (alone) for the token authority; tests and private authorities.
CA_ENV = "RELAYPROBE_OAUTH_CA_FILE"
HTTP_TIMEOUT = 30.0


def authority_of(auth: Auth) -> str:
    """The authority URL: the configured one (sovereign clouds, tests) or Entra's for tenant_id."""
    return (auth.authority or f"{DEFAULT_AUTHORITY}{auth.tenant_id}").rstrip("/")


def http_client(ca_file: Path | None) -> Any:
    """A requests session for MSAL that trusts ``ca_file`` alone (when given), with a timeout."""
    import requests

    session = requests.Session()
    # Bound per request: requests lets REQUESTS_CA_BUNDLE override a session's verify, but never
    # an explicit request argument (tests/oauth/README.md#ca-for-the-authority).
    kw: dict[str, Any] = {"timeout": HTTP_TIMEOUT}
    if ca_file is not None:
        kw["verify"] = str(ca_file)
    session.request = functools.partial(session.request, **kw)  # type: ignore[method-assign]
    return session


def token_failure(
    auth: Auth, what: str, remedy: str, secrets: tuple[str, ...] = ()
) -> ProbeFailure:
    """The auth-stage failure for a token that could not be had; secrets masked out."""
    message = f"token from {authority_of(auth)} for client {auth.client_id} failed: {what}"
    for s in secrets:  # defence in depth: nothing below should echo a secret, but never let it
        if s:
            message = message.replace(s, "<secret>")
            remedy = remedy.replace(s, "<secret>")
    return ProbeFailure.at(Stage.AUTH, Reason.OAUTH_TOKEN_FAILED, None, message, remedy=remedy)


def explain_error(auth: Auth, error: str, description: str, codes: list[int]) -> tuple[str, str]:
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
        return token_failure(auth, f"{code} ({type(exc).__name__})", remedy, secrets)
    if "InvalidKeyError" in {type(x).__name__ for x in chain} or "private key" in text.lower():
        return token_failure(
            auth,
            f"the certificate_file key cannot sign ({short_text(exc)})",
            "certificate_file must hold the app certificate's RSA private key in PEM "
            "(openssl pkcs12 -in app.pfx -out app.pem -nodes) and "
            "certificate_passphrase must match",
            secrets,
        )
    if any(isinstance(x, requests.exceptions.SSLError) for x in chain):
        return token_failure(
            auth,
            f"TLS to the authority failed ({short_text(exc)})",
            f"trust the authority's CA ({CA_ENV}=FILE) or fix its certificate",
            secrets,
        )
    if any(isinstance(x, requests.exceptions.RequestException | OSError) for x in chain):
        return token_failure(
            auth,
            f"cannot reach the authority ({short_text(exc)})",
            "check DNS, the outbound HTTPS proxy and firewall towards the "
            "authority; it retries on the next run",
            secrets,
        )
    return token_failure(
        auth,
        f"{type(exc).__name__}: {short_text(exc)}",
        "check tenant_id/authority and the credential",
        secrets,
    )


def short_text(exc: BaseException) -> str:
    """An exception's text on one line, at most 300 characters (for messages and logs)."""
    return " ".join(str(exc).split())[:300]
