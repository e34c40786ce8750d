"""relayprobe acquisition: send a tagged probe through a relay, confirm it over IMAP, read the verdict."""

# The public interface that exporters/, nagios/ and relayprobe/ import. Names resolve lazily
# (PEP 562): `check_m365_relay --help` and `relayprobe --help` must not pay for pydantic,
# aiosmtplib or imapclient (bench/cli_startup.py).

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it (the one source; __all__ is derived from it).
_EXPORTS = {
    "Auth": "probe.config",
    "Config": "probe.config",
    "ConfigError": "probe.config",
    "Expect": "probe.config",
    "Mailbox": "probe.config",
    "Smtp": "probe.config",
    "Target": "probe.config",
    "Thresholds": "probe.config",
    "load_config": "probe.config",
    "parse_config": "probe.config",
    "redacted_dict": "probe.config",
    "configured_checks": "probe.verdict.judge",
    "run_probe": "probe.roundtrip",
    "new_watch": "probe.roundtrip",
    "MailboxWatch": "probe.imap.watch",
    "Found": "probe.imap.watcher",
    "ProbeFailure": "probe.failure",
    "clear_token_cache": "probe.m365.tokens",
    "AUTH_METHODS": "probe.result",
    "CHECKS": "probe.result",
    "CheckResult": "probe.result",
    "CONFIGURATION_REASONS": "probe.result",
    "SMTP_PHASES": "probe.result",
    "Arrival": "probe.result",
    "AuthVerdict": "probe.result",
    "HeaderVerdict": "probe.result",
    "Hop": "probe.result",
    "ProbeResult": "probe.result",
    "Reason": "probe.result",
    "SmtpReceipt": "probe.result",
    "SpamVerdict": "probe.result",
    "Stage": "probe.result",
    "Status": "probe.result",
    "Timings": "probe.result",
    "Trace": "probe.result",
    "TraceEvent": "probe.result",
    "TRACE_STATUSES": "probe.result",
    "rfc3339": "probe.result",
    "parse_rfc3339": "probe.result",
    "ResultError": "probe.result",
    "PostureCheck": "probe.posture",
    "PostureReport": "probe.posture",
    "PostureSettings": "probe.posture",
    "PostureState": "probe.posture",
    "check_domain": "probe.posture",
    "domain_of": "probe.posture",
    "settings_for": "probe.posture",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'probe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value
