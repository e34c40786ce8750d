"""Active mode: one full round trip for one target (from a config file or wholly from options)."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

from nagiosplugin import Range

from nagios.argspec import UsageError
from nagios.options import Options
from probe import AUTH_METHODS, Thresholds, load_config, parse_config, run_probe

_TAG_ENV = "RELAYPROBE_CHECK_TAG_SECRET"


def _imap_password(opts: Options) -> dict[str, str] | None:
    if opts.imap_password_file:
        return {"password_file": opts.imap_password_file}
    if os.environ.get(opts.imap_password_env):
        return {"password": "${" + opts.imap_password_env + "}"}
    return None


def quick_config_data(opts: Options) -> dict[str, Any]:
    """The relayprobe config document a quick check (-H ...) stands for."""
    smtp: dict[str, Any] = {"host": opts.host, "security": opts.security}
    if opts.port is not None:  # else the config's port for the security (587, 465 or 25)
        smtp["port"] = opts.port
    if opts.username:
        smtp["auth"] = {"method": "password", "username": opts.username, **_smtp_password(opts)}
    imap_user = opts.imap_username or opts.rcpt_to
    imap_secret = _imap_password(opts)
    if imap_secret is None and opts.username and imap_user == opts.username:
        imap_secret = _smtp_password(opts)  # the same mailbox sends and receives
    if imap_secret is None:
        raise UsageError(
            f"no IMAP password for {imap_user}: set {opts.imap_password_env} or "
            "--imap-password-file"
        )
    mailbox: dict[str, Any] = {
        "host": opts.imap_host,
        "security": opts.imap_security,
        "auth": {"method": "password", "username": imap_user, **imap_secret},
    }
    if opts.imap_port is not None:  # else the config's port for the security (993 or 143)
        mailbox["port"] = opts.imap_port
    if opts.ca_file:
        smtp["ca_file"] = mailbox["ca_file"] = opts.ca_file
    target: dict[str, Any] = {
        # The name shows in the output: --target if given, else the relay host (a valid name).
        "name": opts.target or re.sub(r"[^A-Za-z0-9_.-]", "-", opts.host or "quick")[:63],
        "smtp": smtp,
        "mail_from": opts.mail_from or opts.username or opts.rcpt_to,
        "rcpt_to": opts.rcpt_to,
        "mailbox": mailbox,
    }
    if opts.delivery_timeout:
        target["timeout"] = opts.delivery_timeout
    if opts.junk_folders:
        target["junk_folders"] = list(opts.junk_folders)
    data: dict[str, Any] = {"targets": [target]}
    if opts.tag_secret_file:
        data["tag_secret_file"] = opts.tag_secret_file
    else:
        # A one-shot check verifies only its own mail: a fresh random key per run is enough.
        data["tag_secret"] = "${" + _TAG_ENV + "}"
    return data


def _smtp_password(opts: Options) -> dict[str, str]:
    if opts.password_file:
        return {"password_file": opts.password_file}
    if os.environ.get(opts.password_env):
        return {"password": "${" + opts.password_env + "}"}
    raise UsageError(
        f"no SMTP password for {opts.username}: set the {opts.password_env} "
        "environment variable or --password-file"
    )


def load(opts: Options) -> tuple[Any, Any]:
    """(config, target) for the options; raises probe.config.ConfigError or UsageError."""
    if opts.mode == "config":
        config = load_config(opts.config)
        return config, config.target(opts.target)
    environ = {**os.environ, _TAG_ENV: secrets.token_hex(32)}
    config = parse_config(quick_config_data(opts), base_dir=Path.cwd(), environ=environ)
    return config, config.targets[0]


def apply_options(target: Any, opts: Options) -> tuple[Any, Options]:
    """The target with the plugin's overrides, and options with the target's thresholds filled in.

    Overrides go into the target too, so run_probe's own verdict and message agree with the
    plugin's evaluation; -w/-c ranges are richer than the config's seconds, so with them the
    target's thresholds are cleared and the plugin alone judges latency.
    """
    expect: dict[str, Any] = {k: list(v) for k, v in opts.expect.items()}
    if opts.expect:  # the options replace the target's auth expectations as a whole
        expect = {m: expect.get(m) for m in AUTH_METHODS}
    if opts.max_scl is not None:
        expect["max_scl"] = opts.max_scl
    if opts.junk_severity == "ok":
        expect["placement"] = "any"
    elif opts.junk_severity:
        expect["junk_severity"] = opts.junk_severity
    update: dict[str, Any] = {"expect": target.expect.model_copy(update=expect)}
    if opts.delivery_timeout:
        update["timeout"] = opts.delivery_timeout
    if opts.warning is not None or opts.critical is not None:
        update["thresholds"] = Thresholds()
    else:
        th = target.thresholds
        opts = replace(
            opts,
            warning=Range(f"{th.warning:g}") if th.warning is not None else None,
            critical=Range(f"{th.critical:g}") if th.critical is not None else None,
        )
    return target.model_copy(update=update), opts


async def run(config: Any, target: Any) -> Any:
    return await run_probe(config, target)
