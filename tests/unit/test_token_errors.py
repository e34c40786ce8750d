"""Token failures get the right reason: "not now" (oauth_unavailable) versus "no" (oauth_token_failed)."""

from __future__ import annotations

import errno

import pytest
import requests

from probe.config import Auth
from probe.failure import ProbeFailure, local_failure
from probe.imap.session import server_text
from probe.m365.authority import clean_entra_text, error_failure, explain_exception
from probe.result import Reason, Stage

AUTH = Auth(
    method="oauth2",
    username="probe@contoso.example",
    tenant_id="11111111-2222-3333-4444-555555555555",
    client_id="app-send",
    client_secret="s3cret-value",
)
# Entra's real layout: the description ends in lines that differ on every answer.
ENTRA_503 = (
    "AADSTS90033: A transient error has occurred. Please try again.\r\n"
    "Trace ID: 0b5c1a6e-7f5e-4b8e-9c1d-2a3b4c5d6e7f\r\n"
    "Correlation ID: 9a8b7c6d-5e4f-3a2b-1c0d-ffeeddccbbaa\r\n"
    "Timestamp: 2026-12-07 21:00:00Z"
)


def test_entra_text_becomes_one_stable_line() -> None:
    other_run = ENTRA_503.replace("0b5c", "ffff").replace("21:00:00Z", "21:05:13Z")
    assert clean_entra_text(ENTRA_503) == (
        "AADSTS90033: A transient error has occurred. Please try again."
    )
    assert clean_entra_text(other_run) == clean_entra_text(ENTRA_503)
    assert clean_entra_text(
        "AADSTS7000215: Invalid client secret. Trace ID: x Correlation ID: y"
    ) == ("AADSTS7000215: Invalid client secret.")


@pytest.mark.parametrize(
    ("result", "status", "reason"),
    [
        ({"error": "temporarily_unavailable", "error_description": ENTRA_503, "error_codes": [90033]}, None, Reason.OAUTH_UNAVAILABLE),
        ({"error": "invalid_request", "error_description": "throttled"}, 429, Reason.OAUTH_UNAVAILABLE),
        ({"error": "server_error", "error_description": "x"}, None, Reason.OAUTH_UNAVAILABLE),
        ({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1", "error_codes": [7000215]}, 401, Reason.OAUTH_TOKEN_FAILED),
        ({"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found", "error_codes": [700016]}, None, Reason.OAUTH_TOKEN_FAILED),
    ],
)  # fmt: skip
def test_error_answers_are_classified(result: dict, status: int | None, reason: Reason) -> None:
    failure = error_failure(AUTH, result, status=status)
    assert (failure.stage, failure.reason) == (Stage.AUTH, reason)
    assert "\r" not in failure.message and "\n" not in failure.message
    assert "Trace ID" not in failure.message and failure.remedy
    if reason is Reason.OAUTH_UNAVAILABLE:
        assert "next run" in failure.remedy and "tenant_id" not in failure.remedy


def _http_error(status: int, body: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code, response._content, response.reason = status, body.encode(), "x"
    return requests.HTTPError(f"{status} Server Error", response=response)


def test_a_5xx_keeps_entras_body() -> None:
    body = '{"error": "temporarily_unavailable", "error_description": "%s", "error_codes": [90033]}'
    exc = _http_error(503, body % ENTRA_503.replace("\r\n", "\\r\\n"))
    failure = explain_exception(AUTH, exc)
    assert failure.reason is Reason.OAUTH_UNAVAILABLE
    assert "AADSTS90033" in failure.message and "HTTP 503" in failure.message


@pytest.mark.parametrize(
    ("exc", "reason", "words"),
    [
        (requests.ConnectionError("[Errno 111] Connection refused"), Reason.OAUTH_UNAVAILABLE, "next run"),
        (requests.exceptions.SSLError("handshake failure"), Reason.OAUTH_UNAVAILABLE, "next run"),
        (TypeError("Password was not given but private key is encrypted"), Reason.OAUTH_TOKEN_FAILED, "certificate_passphrase"),
        (ValueError("Bad decrypt. Incorrect password?"), Reason.OAUTH_TOKEN_FAILED, "passphrase the key was exported with"),
    ],
)  # fmt: skip
def test_exceptions_are_classified(exc: Exception, reason: Reason, words: str) -> None:
    failure = explain_exception(AUTH, exc, ("s3cret-value",))
    assert failure.reason is reason
    assert failure.remedy is not None and words in failure.remedy
    assert "cryptography" not in failure.message + failure.remedy


def test_a_token_failure_names_its_side() -> None:
    failure = error_failure(AUTH, {"error": "invalid_client", "error_codes": [7000215]})
    imap = failure.on_side("IMAP", Stage.DELIVER)
    assert imap.message.startswith("deliver: IMAP token from ") and imap.reason is failure.reason
    assert failure.on_side("SMTP", Stage.AUTH).message.startswith("auth: SMTP token from ")


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM])
def test_local_exhaustion_is_internal_error(code: int) -> None:
    exc = OSError(code, "x")
    failure = local_failure(Stage.TLS, exc, "loading the TLS files")
    assert failure is not None and failure.reason is Reason.INTERNAL_ERROR
    assert failure.message.startswith("tls local: loading the TLS files: this host is out of")
    assert failure.remedy and "relay was not reached" in failure.remedy


def test_an_unreadable_file_is_local_only_when_named() -> None:
    exc = PermissionError(errno.EACCES, "Permission denied")
    assert local_failure(Stage.TLS, exc, "x") is None
    failure = local_failure(Stage.TLS, exc, "loading", file="smtp.ca_file")
    assert failure is not None and "cannot read smtp.ca_file" in failure.message
    assert (
        local_failure(Stage.CONNECT, ConnectionRefusedError(errno.ECONNREFUSED, "x"), "c") is None
    )


def test_server_text_never_shows_python_bytes() -> None:
    assert server_text(Exception("b'[AUTHENTICATIONFAILED] Authentication failed.'")) == (
        "[AUTHENTICATIONFAILED] Authentication failed."
    )
    assert server_text(Exception(b"[UNAVAILABLE] Temporary  failure")) == (
        "[UNAVAILABLE] Temporary failure"
    )
    assert isinstance(ProbeFailure.at(Stage.AUTH, Reason.AUTH_FAILED, None, "x"), ProbeFailure)
