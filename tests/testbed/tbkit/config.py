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

# Test-only accounts (documented in README.md; not secrets).
USERS = {
    "sender@probe.test": "SenderPass-1",
    "inbox@probe.test": "InboxPass-1",
    "probe@probe.test": "ProbePass-1",
}

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
    names = {"sender": "SENDER", "inbox": "INBOX", "probe": "PROBE"}
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
    for address, password in USERS.items():
        key = names[address.split("@")[0]]
        lines += [f"TB_{key}_USER={address}", f"TB_{key}_PASSWORD={password}"]
    return lines
