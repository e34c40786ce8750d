"""Command-line options of check_m365_relay: parsing, validation and the typed Options value."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nagiosplugin import Range

from nagios.argspec import (
    EXPORTER_PASSWORD_ENV,
    IMAP_PASSWORD_ENV,
    RANGE_EXAMPLES,
    SMTP_PASSWORD_ENV,
    UsageError,
    build_parser,
)
from probe import AUTH_METHODS

__all__ = ["Options", "parse_options"]


@dataclass(frozen=True)
class Options:
    """Everything the command line said, validated; ``mode`` is config, quick or passive."""

    mode: str
    target: str | None = None
    config: str | None = None
    # quick mode: the whole target from options
    host: str | None = None
    port: int | None = None  # None: the config's default for the security
    security: str = "starttls"
    ca_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    password_env: str = SMTP_PASSWORD_ENV
    mail_from: str | None = None
    rcpt_to: str | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: str = "tls"
    imap_username: str | None = None
    imap_password_file: str | None = None
    imap_password_env: str = IMAP_PASSWORD_ENV
    delivery_timeout: float | None = None
    junk_folders: tuple[str, ...] = ()
    tag_secret_file: str | None = None
    # passive mode
    exporter: str | None = None
    max_age: float = 900.0
    stale_state: str = "unknown"
    exporter_username: str | None = None
    exporter_password_file: str | None = None
    exporter_password_env: str = EXPORTER_PASSWORD_ENV
    exporter_ca_file: str | None = None
    # evaluation
    warning: Range | None = None
    critical: Range | None = None
    expect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_scl: int | None = None
    junk_severity: str | None = None
    timeout: float | None = None
    timeout_state: str = "unknown"
    verbose: int = 0


def _range(option: str, spec: str | None) -> Range | None:
    if spec is None or not spec.strip():  # an empty $ARG$ in a core's command line: no threshold
        return None
    from nagiosplugin import Range

    try:
        return Range(spec.strip())
    except ValueError as exc:
        # nagiosplugin says "start 10 must not be greater than end 5"; other errors are int()'s.
        why = f"{exc}; " if str(exc).startswith("start ") else ""
        raise UsageError(f"invalid {option} range '{spec}' ({why}{RANGE_EXAMPLES})") from None


def _mode(ns: argparse.Namespace) -> str:
    if ns.exporter:
        if ns.config or ns.host:
            raise UsageError("--from-exporter reads results: do not combine it with --config or -H")
        if not ns.target:
            raise UsageError("--from-exporter needs --target NAME")
        if not ns.exporter.startswith(("http://", "https://")):
            raise UsageError(f"--from-exporter '{ns.exporter}' must be an http:// or https:// URL")
        if ns.max_age <= 0:
            raise UsageError("--max-age must be greater than 0")
        return "passive"
    if ns.config:
        if ns.host:
            raise UsageError("use either --config/--target or -H with the quick-check options")
        if not ns.target:
            raise UsageError("--config needs --target NAME")
        return "config"
    if ns.host:
        missing = [
            o for o, v in (("--rcpt-to", ns.rcpt_to), ("--imap-host", ns.imap_host)) if not v
        ]
        if missing:
            raise UsageError(f"a quick check (-H) also needs {' and '.join(missing)}")
        return "quick"
    raise UsageError(
        "say what to check: --config FILE --target NAME, -H HOST ..., or "
        "--from-exporter URL --target NAME"
    )


def parse_options(argv: list[str] | None = None) -> Options:
    """Parse and validate argv; raise UsageError (UNKNOWN) or HelpRequested (-h/-V, UNKNOWN)."""
    args = sys.argv[1:] if argv is None else argv
    ns, extra = build_parser().parse_known_args(args)
    if extra:
        # Name only option-like tokens: a mistyped option's value may be a secret.
        flags = [a.split("=", 1)[0] for a in extra if a.startswith("-")]
        what = f"unknown option(s) {', '.join(flags)}" if flags else "unexpected argument(s)"
        raise UsageError(f"{what}; positional arguments are not used")
    if ns.timeout is not None and ns.timeout <= 0:
        raise UsageError("-t/--timeout must be greater than 0 seconds")
    if ns.max_scl is not None and not -1 <= ns.max_scl <= 9:
        raise UsageError(f"--max-scl {ns.max_scl} is outside Microsoft's SCL scale -1..9")
    expect = {}
    for method in AUTH_METHODS:
        raw = getattr(ns, f"expect_{method}")
        if raw is not None:
            values = tuple(v.strip().lower() for v in raw.split(",") if v.strip())
            if not values:
                raise UsageError(f"--expect-{method} needs at least one result, e.g. pass")
            expect[method] = values
    return Options(
        mode=_mode(ns),
        target=ns.target,
        config=ns.config,
        host=ns.host,
        port=ns.port,
        security=ns.security,
        ca_file=ns.ca_file,
        username=ns.username,
        password_file=ns.password_file,
        password_env=ns.password_env,
        mail_from=ns.mail_from,
        rcpt_to=ns.rcpt_to,
        imap_host=ns.imap_host,
        imap_port=ns.imap_port,
        imap_security=ns.imap_security,
        imap_username=ns.imap_username,
        imap_password_file=ns.imap_password_file,
        imap_password_env=ns.imap_password_env,
        delivery_timeout=ns.delivery_timeout,
        junk_folders=tuple(ns.junk_folder or ()),
        tag_secret_file=ns.tag_secret_file,
        exporter=ns.exporter,
        max_age=ns.max_age,
        stale_state=ns.stale_state,
        exporter_username=ns.exporter_username,
        exporter_password_file=ns.exporter_password_file,
        exporter_password_env=ns.exporter_password_env,
        exporter_ca_file=ns.exporter_ca_file,
        warning=_range("-w/--warning", ns.warning),
        critical=_range("-c/--critical", ns.critical),
        expect=expect,
        max_scl=ns.max_scl,
        junk_severity=ns.junk_severity,
        timeout=ns.timeout,
        timeout_state=ns.timeout_state,
        verbose=min(ns.verbose, 3),
    )
