"""Fixed facts of the testbed: addresses, ports, users and the state dir layout."""

from __future__ import annotations

import os
from pathlib import Path

HOST = "127.0.0.1"
STRICT_HOST = "127.0.0.3"
RELAY_SOURCE = "127.0.0.2"
DNS_HOST = "127.0.0.153"
DOMAIN = "probe.test"
AUTHSERV_ID = "mx.probe.test"
DKIM_SELECTOR = "tb"

PORTS = {
    "submission": 10587,
    "mx": 10025,
    "plain": 10026,
    "imap_starttls": 10143,
    "imap_tls": 10993,
    "lmtp": 10024,
    "dkim_sign": 18891,
    "dkim_verify": 18892,
    "dmarc": 18893,
}

#: An SMTP login shaped like Azure Communication Services' "<ACS resource name>.<Entra app id>.<tenant
#: id>" (docs/configuration.md#mode-acs); not an address. templates/postfix/sender_login.pcre lets
#: it send as ACS_SENDER only, the way an ACS resource sends as a verified domain's address.
ACS_LOGIN = "acsprobe.11111111-2222-3333-4444-555555555555.aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
ACS_SENDER = "donotreply@probe.test"

# Test-only accounts (documented in README.md; not secrets).
USERS = {
    "sender@probe.test": "SenderPass-1",
    "inbox@probe.test": "InboxPass-1",
    "probe@probe.test": "ProbePass-1",
    ACS_LOGIN: "AcsClientSecret-test-1",  # ACS: the Entra app's client secret is the password
}
#: The TB_<NAME>_USER / TB_<NAME>_PASSWORD names of each account in `tb env`.
ENV_NAMES = {
    "sender@probe.test": "SENDER",
    "inbox@probe.test": "INBOX",
    "probe@probe.test": "PROBE",
    ACS_LOGIN: "ACS",
}

#: Generated tenant mailboxes for scale tests (a service provider watching many customer tenants,
#: bench/scale.py --mailboxes distinct): tenant0001@probe.test ... each with the password
#: TenantPass-<n> (README.md "Users"). Each may submit as itself and receives mail.
TENANT_COUNT = 600
TENANT_USER_FORMAT = "tenant%04d@probe.test"
TENANT_PASSWORD_FORMAT = "TenantPass-%d"


def tenant_users() -> dict[str, str]:
    """Address -> password of every generated tenant mailbox (1-based numbering)."""
    return {TENANT_USER_FORMAT % n: TENANT_PASSWORD_FORMAT % n for n in range(1, TENANT_COUNT + 1)}


PACKAGE_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = PACKAGE_DIR / "templates"
HELPERS = PACKAGE_DIR / "helpers"
MARKER = ".relayprobe-testbed"


def state_dir() -> Path:
    return Path(os.environ.get("TB_STATE_DIR", "/tmp/relayprobe-testbed")).resolve()


def lock_path(state: Path) -> Path:
    # Next to the state dir, so a fresh start can wipe the dir while holding the lock.
    return state.parent / (state.name + ".lock")


def env_lines(state: Path) -> list[str]:
    """Shell-style KEY=VALUE lines describing the testbed (printed by `tb env`, saved as tb.env)."""
    lines = [
        f"TB_STATE_DIR={state}",
        f"TB_HOST={HOST}",
        f"TB_SUBMISSION_PORT={PORTS['submission']}",
        f"TB_MX_PORT={PORTS['mx']}",
        f"TB_PLAIN_PORT={PORTS['plain']}",
        f"TB_IMAP_STARTTLS_PORT={PORTS['imap_starttls']}",
        f"TB_IMAP_TLS_PORT={PORTS['imap_tls']}",
        f"TB_IMAP_STRICT_HOST={STRICT_HOST}",
        f"TB_LMTP_PORT={PORTS['lmtp']}",
        f"TB_RELAY_SOURCE={RELAY_SOURCE}",
        f"TB_DNS_SERVER={DNS_HOST}",
        f"TB_DOMAIN={DOMAIN}",
        f"TB_AUTHSERV_ID={AUTHSERV_ID}",
        f"TB_DKIM_SELECTOR={DKIM_SELECTOR}",
        f"TB_CA_FILE={state / 'tls' / 'ca.crt'}",
        f"TB_LOG_DIR={state / 'log'}",
        f"TB_USERS='{' '.join(USERS)}'",
    ]
    for login, password in USERS.items():
        key = ENV_NAMES[login]
        lines += [f"TB_{key}_USER={login}", f"TB_{key}_PASSWORD={password}"]
    lines.append(f"TB_ACS_SENDER={ACS_SENDER}")
    lines += [
        f"TB_TENANT_USERS={TENANT_COUNT}",
        f"TB_TENANT_USER_FORMAT={TENANT_USER_FORMAT}",
        f"TB_TENANT_PASSWORD_FORMAT={TENANT_PASSWORD_FORMAT}",
    ]
    return lines
