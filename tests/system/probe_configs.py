"""Config builders for tests that probe the local mail system (tests/testbed)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from probe.config import Config, parse_config


def target_dict(tb: Any, name: str = "relay", **over: Any) -> dict[str, Any]:
    """A submission target through the testbed relay into inbox@probe.test (all verified TLS)."""
    target: dict[str, Any] = {
        "name": name,
        "smtp": {
            "host": tb.host,
            "port": tb.submission_port,
            "security": "starttls",
            "ca_file": str(tb.ca_file),
            "timeout": "10s",
            "auth": {
                "method": "password",
                "username": "probe@probe.test",
                "password": "${TB_PROBE_PASSWORD}",
            },
        },
        "mail_from": "probe@probe.test",
        "rcpt_to": "inbox@probe.test",
        "mailbox": {
            "host": tb.host,
            "port": tb.imap_tls_port,
            "security": "tls",
            "ca_file": str(tb.ca_file),
            "auth": {
                "method": "password",
                "username": "inbox@probe.test",
                "password": "${TB_INBOX_PASSWORD}",
            },
        },
        "timeout": "20s",
        "expect": {"spf": "pass", "dkim": "pass", "dmarc": "pass", "placement": "inbox"},
        "thresholds": {"warning": "10s", "critical": "15s"},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = {**target[key], **value}
        else:
            target[key] = value
    return target


def make_config(tb: Any, *targets: dict[str, Any], instance: str | None = None) -> Config:
    """A config whose instance id is unique, so concurrent test runs never see each other's mail."""
    data = {
        "instance": instance or f"test-{secrets.token_hex(4)}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": list(targets) or [target_dict(tb)],
    }
    environ = {
        "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
        "TB_TAG_SECRET": "relayprobe-test-tag-secret-0123456789",
    }
    return parse_config(data, base_dir=Path.cwd(), environ=environ)
