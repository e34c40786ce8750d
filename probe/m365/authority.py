"""The Microsoft Entra authority: its URL, the HTTP client MSAL uses, and its errors explained."""

from __future__ import annotations

import functools
import json
import logging
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe.failure import ProbeFailure
from probe.m365.codes import aadsts_remedy
from probe.result import Reason, Stage

if TYPE_CHECKING:
    from probe.config import Auth

#: Trust this PEM CA bundle (alone) for the token authority; tests and private authorities.
CA_ENV = "RELAYPROBE_OAUTH_CA_FILE"
HTTP_TIMEOUT = 30.0
#: OAuth error names and AADSTS codes that mean "the authority cannot answer now, ask again later"
#: (docs/m365.md#token-errors): they are `oauth_unavailable`, never a configuration error.
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
TRANSIENT_CODES = frozenset({90033, 50196})

log = logging.getLogger("relayprobe.oauth")


def authority_of(auth: Auth) -> str:
    """The authority URL: the configured one (private authorities, tests) or, for tenant_id, the
    one of the block's cloud (login.microsoftonline.com, .us, partner.microsoftonline.cn)."""
    from probe.config.clouds import cloud_of  # lazily: probe.config loads pydantic

    if auth.authority:
        return auth.authority.rstrip("/")
    return cloud_of(getattr(auth, "cloud", None)).authority_for(auth.tenant_id)


def _authority_host(auth: Auth) -> str:
    return authority_of(auth).split("/")[2]


def _for_cloud(auth: Auth, remedy: str) -> str:
    """A remedy naming the global scope (probe/m365/codes.py) with this block's cloud's scope:
    a GCC High app asks for https://outlook.office365.us/.default (docs/m365.md#sovereign-clouds)."""
    from probe.config.clouds import CLOUDS, cloud_of

    return remedy.replace(CLOUDS["global"].scope, cloud_of(getattr(auth, "cloud", None)).scope)


def _status_session() -> Any:
    import requests

    class StatusSession(requests.Session):
        """Remembers the last answer: MSAL keeps neither a 429's status nor a 5xx's body
        (it raises "HTTP Error: 503"), and the reason lives in both."""

        last_status: int | None = None
        last_text: str = ""

        def request(self, *args: Any, **kwargs: Any) -> Any:
            self.last_status, self.last_text = None, ""
            response = super().request(*args, **kwargs)
            self.last_status, self.last_text = response.status_code, response.text[:8192]
            return response

    return StatusSession()


def http_client(ca_file: Path | None) -> Any:
    """A requests session for MSAL that trusts ``ca_file`` alone (when given), with a timeout."""
    session = _status_session()
    # Bound per request: requests lets REQUESTS_CA_BUNDLE override a session's verify, but never
    # an explicit request argument (tests/oauth/README.md#ca-for-the-authority).
    kw: dict[str, Any] = {"timeout": HTTP_TIMEOUT}
    if ca_file is not None:
        kw["verify"] = str(ca_file)
    session.request = functools.partial(session.request, **kw)  # type: ignore[method-assign]
    return session


def token_failure(
    auth: Auth,
    what: str,
    remedy: str,
    secrets: tuple[str, ...] = (),
    *,
    reason: Reason = Reason.OAUTH_TOKEN_FAILED,
) -> ProbeFailure:
    """The auth-stage failure for a token that could not be had; secrets masked out."""
    message = f"token from {authority_of(auth)} for client {auth.client_id} failed: {what}"
    for s in secrets:  # defence in depth: nothing below should echo a secret, but never let it
        if s:
            message = message.replace(s, "<secret>")
            remedy = remedy.replace(s, "<secret>")
    return ProbeFailure.at(Stage.AUTH, reason, None, message, remedy=remedy)


def unavailable_remedy(auth: Auth) -> str:
    return (
        f"temporary: {authority_of(auth)} could not issue a token now (unreachable, failing or "
        "throttling); relayprobe asks again at the next run, without backing off. If it lasts, "
        "check DNS, the outbound HTTPS proxy and firewall towards it, and Microsoft's service health"
    )


def clean_entra_text(text: str) -> str:
    """Entra's error_description on one stable line: its Trace ID, Correlation ID and Timestamp
    lines (different on every answer) dropped, whitespace and CR/LF folded."""
    kept = []
    for line in re.split(r"[\r\n]+", text):
        line = re.split(r"\s*\b(?:Trace ID|Correlation ID|Timestamp):", line, maxsplit=1)[0]
        if line.strip():
            kept.append(line.strip())
    return " ".join(" ".join(kept).split())


def explain_error(auth: Auth, error: str, description: str, codes: list[int]) -> tuple[str, str]:
    """(what failed, remedy) from an Entra error; the AADSTS code picks the remedy."""
    log.debug("oauth: %s answered %s: %r", authority_of(auth), error, description)
    first = clean_entra_text(description) or error
    code = f"AADSTS{codes[0]}" if codes else None
    known = aadsts_remedy(code or first)
    if known:
        return f"{error}: {first}", _for_cloud(auth, known[1])
    return f"{error}: {first}", (
        "look up the AADSTS code at https://login.microsoftonline.com/error and check "
        "tenant_id, client_id and the credential of this auth block"
    )


def is_transient(error: str, codes: list[int], status: int | None) -> bool:
    """True when the authority's answer means "not now" rather than "no" (429, 5xx, transient)."""
    if status is not None and (status == 429 or status >= 500):
        return True
    return error in TRANSIENT_ERRORS or bool(TRANSIENT_CODES & set(codes))


def error_failure(
    auth: Auth,
    result: dict[str, Any],
    *,
    status: int | None = None,
    secrets: tuple[str, ...] = (),
    remedy: str | None = None,
) -> ProbeFailure:
    """The failure for an error answer of the token endpoint (the dict MSAL returns)."""
    error = str(result.get("error") or "error")
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    what, known = explain_error(auth, error, str(result.get("error_description") or ""), codes)
    if is_transient(error, codes, status):
        what = f"{what} (HTTP {status})" if status else what
        return token_failure(
            auth, what, unavailable_remedy(auth), secrets, reason=Reason.OAUTH_UNAVAILABLE
        )
    return token_failure(auth, what, remedy or known, secrets)


def _answer_failure(auth: Auth, status: int, text: str, secrets: tuple[str, ...]) -> ProbeFailure:
    """The failure for an HTTP error answer whose body MSAL dropped: read Entra's JSON body
    (AADSTS90033 …), or name the status where the body is not JSON (a plain-text 429)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"error": f"HTTP {status}", "error_description": " ".join(text.split())[:200]}
    return error_failure(auth, body, status=status, secrets=secrets)


def explain_exception(
    auth: Auth, exc: Exception, secrets: tuple[str, ...] = (), *, http: Any = None
) -> ProbeFailure:
    """The ProbeFailure for an exception MSAL raised (network, TLS, key, AADSTS in the text).

    ``http`` is the session MSAL used (``http_client``): its last answer tells a 5xx or a 429
    whose body MSAL did not keep.
    """
    import requests

    chain, e = [], exc
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    http_error = next(
        (x for x in chain if isinstance(x, requests.HTTPError) and x.response is not None), None
    )
    if http_error is not None:
        response = http_error.response
        return _answer_failure(auth, response.status_code, response.text, secrets)
    status = getattr(http, "last_status", None)
    if status is not None and (status == 429 or status >= 500):
        return _answer_failure(auth, status, getattr(http, "last_text", ""), secrets)
    text = " ".join(str(x) for x in chain)
    lowered = text.lower()
    known = aadsts_remedy(text)
    if known:
        code, remedy = known
        return token_failure(
            auth, f"{code} ({type(exc).__name__})", _for_cloud(auth, remedy), secrets
        )
    if "password was not given" in lowered or "private key is encrypted" in lowered:
        return token_failure(
            auth,
            "the certificate_file key is encrypted and no certificate_passphrase is set",
            "set certificate_passphrase (or certificate_passphrase_file) to the key's passphrase, "
            "or store the key unencrypted with mode 0600",
            secrets,
        )
    if "bad decrypt" in lowered or "incorrect password" in lowered:
        return token_failure(
            auth,
            "certificate_passphrase does not decrypt the certificate_file key",
            "set certificate_passphrase to the passphrase the key was exported with",
            secrets,
        )
    if "InvalidKeyError" in {type(x).__name__ for x in chain} or "private key" in lowered:
        return token_failure(
            auth,
            f"the certificate_file key cannot sign ({short_text(exc)})",
            "certificate_file must hold the app certificate's RSA private key in PEM "
            "(openssl pkcs12 -in app.pfx -out app.pem -nodes) and "
            "certificate_passphrase must match",
            secrets,
        )
    if any(isinstance(x, ssl.SSLCertVerificationError) for x in chain) or (
        "certificate verify failed" in lowered
    ):
        # An untrusted certificate does not heal by waiting: the trust store (or a TLS-inspecting
        # proxy) needs fixing, so it is configuration-class (docs/architecture.md, "Reasons").
        return token_failure(
            auth,
            f"the authority's certificate is not trusted ({short_text(exc)})",
            f"trust the authority's CA ({CA_ENV}=FILE, or the system store), or exempt "
            f"{_authority_host(auth)} from TLS inspection",
            secrets,
        )
    if any(isinstance(x, requests.exceptions.SSLError) for x in chain):
        return token_failure(
            auth,
            f"TLS to the authority failed ({short_text(exc)})",
            unavailable_remedy(auth)
            + f"; if its certificate changed, trust its CA ({CA_ENV}=FILE)",
            secrets,
            reason=Reason.OAUTH_UNAVAILABLE,
        )
    if any(isinstance(x, requests.exceptions.RequestException | OSError) for x in chain):
        # requests nests the cause deep in a long repr; "[Errno 111] Connection refused" is it.
        errno_text = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
        cause = errno_text.group(0).strip() if errno_text else short_text(exc)
        return token_failure(
            auth,
            f"cannot reach the authority ({cause})",
            unavailable_remedy(auth),
            secrets,
            reason=Reason.OAUTH_UNAVAILABLE,
        )
    return token_failure(
        auth,
        f"{type(exc).__name__}: {short_text(exc)}",
        "check tenant_id/authority and the credential of this auth block",
        secrets,
    )


def short_text(exc: BaseException) -> str:
    """An exception's text on one line, at most 300 characters (for messages and logs)."""
    return " ".join(str(exc).split())[:300]
