"""OAuth end to end: MSAL -> local authority -> XOAUTH2 into Postfix submission and Dovecot IMAP."""

from __future__ import annotations

import base64
import time

import aiosmtplib.auth
import pytest

from probe.failure import ProbeFailure
from probe.imap import session as imap
from probe.m365 import tokens as oauth_mod
from probe.result import CONFIGURATION_REASONS, Reason, Stage, Status
from probe.roundtrip import run_probe
from probe.smtp.submission import send_probe
from tests.oauth.fixture import INBOX, SEND_SECRET, SENDER, OAuthEnv, oauth, oauth_env  # noqa: F401

MS_USER = "test@contoso.onmicrosoft.com"
MS_TOKEN = "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA"
MS_SASL = (
    "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0oz"
    "VmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
)


def test_xoauth2_string_equals_microsofts_published_example() -> None:
    assert oauth_mod.xoauth2_string(MS_USER, MS_TOKEN) == MS_SASL
    # What actually goes on the wire for SMTP (aiosmtplib) is the same string.
    assert aiosmtplib.auth.auth_xoauth2_encode(MS_USER, MS_TOKEN).decode() == MS_SASL
    assert base64.b64decode(MS_SASL).split(b"\x01")[:2] == [
        b"user=" + MS_USER.encode(),
        b"auth=Bearer " + MS_TOKEN.encode(),
    ]


def _providers(env: OAuthEnv, config, target=None):  # type: ignore[no-untyped-def]
    t = target or config.targets[0]
    smtp = oauth_mod.token_provider(t.smtp.auth, ca_file=env.ca_file) if t.smtp.auth else None
    return smtp, oauth_mod.token_provider(t.mailbox.auth, ca_file=env.ca_file)


async def test_good_secret_delivers_end_to_end(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config()
    smtp_token, imap_token = _providers(oauth, config)
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert (result.status, result.stage, result.reason) == (Status.OK, Stage.DONE, Reason.OK), (
        result.message
    )
    assert result.arrival.folder == "INBOX"
    assert oauth.authority.token_count("app-send") == 1
    assert oauth.authority.token_count("app-read") == 1
    assert "sasl_method=XOAUTH2, sasl_username=sender@oauth.test" in oauth.pair.log_text()


async def test_certificate_credential_gets_a_token_and_delivers(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config(oauth.target(smtp_auth=oauth.auth("app-cert")))
    smtp_token, imap_token = _providers(oauth, config)
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert result.status is Status.OK, result.message
    assert oauth.authority.token_count("app-cert") == 1


async def test_one_token_is_shared_by_smtp_and_imap_of_one_app(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config(oauth.target(smtp_auth=oauth.auth("app-read", username=INBOX)))
    t = config.targets[0]
    a = oauth_mod.token_provider(t.smtp.auth, ca_file=oauth.ca_file)
    b = oauth_mod.token_provider(t.mailbox.auth, ca_file=oauth.ca_file)
    assert await a() == await b() == await a()
    assert oauth.authority.token_count("app-read") == 1


async def test_expired_token_is_renewed(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.authority.token_lifetime = 2  # "expire tokens quickly"
    config = oauth.config()
    smtp_token, imap_token = _providers(oauth, config)
    first = await smtp_token()
    assert await smtp_token() == first  # still fresh: served from the cache
    time.sleep(3.3)  # Dovecot compares whole seconds: exp < now
    # The old token is really dead: Dovecot refuses it.
    with pytest.raises(ProbeFailure) as refused:
        imap.connect(
            config.targets[0].mailbox.model_copy(
                update={
                    "auth": config.targets[0].mailbox.auth.model_copy(update={"username": SENDER})
                }
            ),
            token=first,
        ).logout()
    assert refused.value.reason is Reason.IMAP_AUTH_FAILED
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert result.status is Status.OK, result.message
    assert await smtp_token() != first
    assert oauth.authority.token_count("app-send") >= 2


async def test_wrong_secret_is_oauth_token_failed_with_remedy(oauth: OAuthEnv) -> None:  # noqa: F811
    wrong = "Wx9~definitely-not-the-secret"
    config = oauth.config(oauth.target(smtp_auth=oauth.auth(client_secret=wrong)))
    smtp_token, imap_token = _providers(oauth, config)
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert (result.status, result.stage, result.reason) == (
        Status.CRITICAL,
        Stage.AUTH,
        Reason.OAUTH_TOKEN_FAILED,
    )
    assert "AADSTS7000215" in result.message and "app-send" in result.message
    assert result.remedy is not None and "secret VALUE" in result.remedy
    assert Reason.OAUTH_TOKEN_FAILED in CONFIGURATION_REASONS  # the scheduler backs off
    text = result.message + result.remedy
    assert wrong not in text and SEND_SECRET not in text


@pytest.mark.parametrize(
    ("change", "code", "remedy_words"),
    [
        ({"client_id": "app-unknown"}, "AADSTS700016", "client_id is not an app"),
        ({"authority": "other-tenant"}, "AADSTS90002", "tenant_id does not exist"),
        ({"certificate_swap": True}, "AADSTS700027", "thumbprint"),
    ],
)
async def test_entra_errors_map_to_remedies(oauth: OAuthEnv, change, code, remedy_words) -> None:  # noqa: F811
    if "authority" in change:
        auth = oauth.auth(authority=oauth.authority.base + "/other-tenant")
    elif "certificate_swap" in change:
        auth = oauth.auth("app-cert", thumbprint="00" * 20)  # not the registered certificate
    else:
        auth = oauth.auth(**change)
    config = oauth.config(oauth.target(smtp_auth=auth))
    with pytest.raises(ProbeFailure) as failed:
        await oauth_mod.token_provider(config.targets[0].smtp.auth, ca_file=oauth.ca_file)()
    f = failed.value
    assert (f.stage, f.reason) == (Stage.AUTH, Reason.OAUTH_TOKEN_FAILED)
    assert code in f.message and f.remedy is not None and remedy_words in f.remedy


async def test_untrusted_authority_certificate_is_a_tls_failure(
    oauth: OAuthEnv,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(oauth_mod.CA_ENV, raising=False)
    config = oauth.config()
    with pytest.raises(ProbeFailure) as failed:
        await oauth_mod.token_provider(config.targets[0].smtp.auth)()  # system trust store only
    assert failed.value.reason is Reason.OAUTH_TOKEN_FAILED
    assert "the authority's certificate is not trusted" in failed.value.message
    assert oauth_mod.CA_ENV in (failed.value.remedy or "")


async def test_ca_from_environment_is_trusted(oauth: OAuthEnv, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv(oauth_mod.CA_ENV, str(oauth.ca_file))
    config = oauth.config()
    token = await oauth_mod.token_provider(config.targets[0].smtp.auth)()
    # A real-sized JWT (tests/oauth/README.md#token-size).
    assert token.count(".") == 2 and len(token) > 2000


async def test_authority_unreachable_names_the_authority(oauth: OAuthEnv) -> None:  # noqa: F811
    auth = oauth.auth(authority="https://127.0.0.1:9/" + oauth.authority.tenant)
    config = oauth.config(oauth.target(smtp_auth=auth))
    with pytest.raises(ProbeFailure) as failed:
        await oauth_mod.token_provider(config.targets[0].smtp.auth, ca_file=oauth.ca_file)()
    assert "cannot reach the authority" in failed.value.message
    assert "https://127.0.0.1:9/" in failed.value.message


async def test_valid_token_but_mailbox_not_permitted_is_auth_failed(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.authority.clients["app-send"].permitted = False
    config = oauth.config()
    smtp_token, imap_token = _providers(oauth, config)
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert (result.status, result.stage, result.reason) == (
        Status.CRITICAL,
        Stage.AUTH,
        Reason.AUTH_FAILED,
    ), result.message
    assert result.smtp is not None and result.smtp.reply_code == 535
    assert "Add-MailboxPermission" in (result.remedy or "")
    assert oauth.authority.token_count("app-send") == 1  # the token itself was fine


async def test_imap_mailbox_not_permitted_is_imap_auth_failed(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.authority.clients["app-read"].permitted = False
    config = oauth.config()
    smtp_token, imap_token = _providers(oauth, config)
    result = await run_probe(
        config, config.targets[0], smtp_token=smtp_token, imap_token=imap_token
    )
    assert result.reason is Reason.IMAP_AUTH_FAILED, result.message


async def test_connector_with_registered_client_certificate_delivers(oauth: OAuthEnv) -> None:  # noqa: F811
    cert, key = oauth.pair.client_cert("connector")
    config = oauth.config(_connector_target(oauth, cert, key))
    _, imap_token = _providers(oauth, config)
    result = await run_probe(config, config.targets[0], imap_token=imap_token)
    assert result.status is Status.OK, result.message
    assert result.smtp is not None and result.smtp.port == oauth.pair.connector_port


async def test_connector_with_unknown_certificate_is_refused_like_m365(oauth: OAuthEnv) -> None:  # noqa: F811
    cert, key = oauth.pair.client_cert("stranger")
    config = oauth.config(_connector_target(oauth, cert, key))
    t = config.targets[0]
    with pytest.raises(ProbeFailure) as refused:
        await send_probe(t.smtp, mail_from=t.mail_from, rcpt_to=t.rcpt_to, message=b"x\r\n")
    f = refused.value
    assert (f.reason, f.reply_code) == (Reason.AUTH_FAILED, 550)
    assert "5.7.64" in f.message and "TlsSenderCertificateName" in (f.remedy or "")


def _connector_target(env: OAuthEnv, cert, key) -> dict:  # type: ignore[no-untyped-def]
    t = env.target(mode="connector")
    t["smtp"] = {
        "host": "127.0.0.1",
        "port": env.pair.connector_port,
        "ca_file": str(env.ca_file),
        "client_cert_file": str(cert),
        "client_key_file": str(key),
    }
    return t


def test_token_provider_refuses_other_methods(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config()
    auth = config.targets[0].smtp.auth.model_copy(update={"method": "password"})
    with pytest.raises(ValueError, match="oauth2"):
        oauth_mod.token_provider(auth)


async def test_provider_for_picks_the_source_by_method(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config()
    t = config.targets[0]
    assert oauth_mod.provider_for(None) is None
    assert oauth_mod.provider_for(t.smtp.auth.model_copy(update={"method": "password"})) is None
    fixed = t.smtp.auth.model_copy(update={"method": "token", "token": t.smtp.auth.client_secret})
    assert await oauth_mod.provider_for(fixed)() == SEND_SECRET  # type: ignore[misc]
    token = await oauth_mod.provider_for(t.smtp.auth, ca_file=oauth.ca_file)()  # type: ignore[misc]
    assert token == oauth.authority.tokens[-1]


def _direct_target(env: OAuthEnv, **over: object) -> dict:
    t = env.target(mode="direct_send", mail_from="app@oauth.test")
    t["smtp"] = {"host": "127.0.0.1", "port": env.pair.direct_port, "ca_file": str(env.ca_file)}
    return t | over


async def test_direct_send_delivers_anonymously(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config(_direct_target(oauth))
    t = config.targets[0]
    assert t.smtp.auth is None and t.smtp.security == "starttls"  # the preset's defaults
    _, imap_token = _providers(oauth, config)
    result = await run_probe(config, t, imap_token=imap_token)
    assert result.status is Status.OK, result.message
    assert result.smtp is not None and result.smtp.tls_version is not None


async def test_direct_send_to_an_outside_domain_is_refused(oauth: OAuthEnv) -> None:  # noqa: F811
    config = oauth.config(_direct_target(oauth, rcpt_to="someone@elsewhere.test"))
    t = config.targets[0]
    with pytest.raises(ProbeFailure) as refused:
        await send_probe(t.smtp, mail_from=t.mail_from, rcpt_to=t.rcpt_to, message=b"x\r\n")
    assert refused.value.reason is Reason.SMTP_REJECTED and "Relay access denied" in str(
        refused.value
    )


async def test_reject_direct_send_is_a_configuration_failure(oauth: OAuthEnv) -> None:  # noqa: F811
    oauth.pair.reject_direct_send(True)
    config = oauth.config(_direct_target(oauth))
    _, imap_token = _providers(oauth, config)
    result = await run_probe(config, config.targets[0], imap_token=imap_token)
    assert (result.stage, result.reason) == (Stage.SUBMIT, Reason.AUTH_FAILED), result.message
    assert "5.7.68" in result.message and "RejectDirectSend" in (result.remedy or "")
    assert result.reason in CONFIGURATION_REASONS
