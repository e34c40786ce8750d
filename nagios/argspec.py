"""The argparse definition of check_m365_relay's options (help text, groups, -h/-V handling)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from probe import AUTH_METHODS

PROG = "check_m365_relay"
SMTP_PASSWORD_ENV = "RELAYPROBE_SMTP_PASSWORD"
IMAP_PASSWORD_ENV = "RELAYPROBE_IMAP_PASSWORD"
EXPORTER_PASSWORD_ENV = "RELAYPROBE_EXPORTER_PASSWORD"
STATES = ("ok", "warning", "critical", "unknown")
RANGE_HELP = "[@][start:][end] in seconds, e.g. 60, 10:, ~:60, 10:20 or @10:20"
RANGE_EXAMPLES = "use e.g. 60, 10:, ~:60, 10:20 or @10:20"
# A short usage keeps the UNKNOWN output for bad options within the guidelines' 80 columns.
USAGE = (
    f"{PROG} --config FILE --target NAME [-w RANGE] [-c RANGE] ...\n"
    f"       {PROG} -H HOST -u USER --rcpt-to ADDR --imap-host HOST ...\n"
    f"       {PROG} --from-exporter URL --target NAME [--max-age SEC]\n"
    f"       {PROG} -h (help), -V (version)"
)


class UsageError(Exception):
    """Bad options: reported as UNKNOWN with the message and the usage lines."""


class HelpRequested(Exception):
    """-h or -V was given: print ``text`` and exit UNKNOWN, as the plugin guidelines say."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Exit(argparse.Action):
    """-h/-V: argparse would exit 0, the guidelines want UNKNOWN (3)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        if self.dest == "help":
            raise HelpRequested(parser.format_help())
        from probe import __version__

        raise HelpRequested(f"{PROG} {__version__} (relayprobe)\n")


class _PasswordRefused(argparse.Action):
    """A password on the command line would show in ps: refuse it without echoing the value."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        raise UsageError(
            f"{option_string} is refused (it would show in ps): "
            f"use --password-file or ${SMTP_PASSWORD_ENV}"
        )


def _imap_security(value: str) -> str:
    """The IMAP login always carries a password or token: plain IMAP is refused, with a reason."""
    if value.strip().lower() == "none":
        raise argparse.ArgumentTypeError(
            "IMAP without TLS is refused (the login would cross the network in the clear): "
            "use starttls or tls"
        )
    return value


def build_parser() -> _Parser:
    p = _Parser(
        prog=PROG,
        usage=USAGE,
        add_help=False,
        allow_abbrev=False,  # "--pass" must never silently mean --password-file
        description="Nagios/Icinga check for a Microsoft 365 SMTP relay: sends one tagged mail, "
        "confirms its arrival over IMAP and reports delivery time, SMTP phases, authentication "
        "results and spam placement. Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        epilog=f"Ranges: {RANGE_HELP} (alert when outside; @ alerts when inside). Relay, network "
        "and delivery failures are CRITICAL; bad options and the plugin's own timeout are UNKNOWN. "
        f"Passwords: --password-file or ${SMTP_PASSWORD_ENV} / ${IMAP_PASSWORD_ENV}, never a "
        "command-line value. See docs/nagios.md.",
    )
    g = p.add_argument_group("general")
    g.add_argument("-h", "--help", nargs=0, action=_Exit, help="show this help and exit (3)")
    g.add_argument("-V", "--version", nargs=0, action=_Exit, help="show the version and exit (3)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail (up to -vvv)")
    g.add_argument(
        "-t",
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="plugin timeout (default: the target's delivery timeout + 30 s; passive mode 10 s)",
    )
    g.add_argument(
        "--timeout-state",
        choices=STATES,
        default="unknown",
        help="state when the plugin timeout expires (default: unknown)",
    )
    g.add_argument(
        "-w",
        "--warning",
        metavar="RANGE",
        help="delivery time (seconds) outside RANGE gives WARNING",
    )
    g.add_argument(
        "-c",
        "--critical",
        metavar="RANGE",
        help="delivery time (seconds) outside RANGE gives CRITICAL",
    )
    for method in AUTH_METHODS:
        g.add_argument(
            f"--expect-{method}",
            metavar="RESULTS",
            help=f"acceptable {method} results, comma separated (e.g. pass); others give CRITICAL",
        )
    g.add_argument(
        "--max-scl", type=int, metavar="N", help="spam confidence level above N gives WARNING"
    )
    g.add_argument(
        "--junk-severity",
        choices=("ok", "warning", "critical"),
        help="state when the mail lands in a junk folder (default: target's, critical)",
    )

    c = p.add_argument_group("target from a relayprobe config file")
    c.add_argument("--config", metavar="FILE", help="relayprobe YAML config")
    c.add_argument(
        "--target",
        metavar="NAME",
        help="target name (config and passive mode; a quick check's label)",
    )

    q = p.add_argument_group("target wholly from options (quick check)")
    q.add_argument("-H", "--hostname", dest="host", metavar="HOST", help="SMTP relay host")
    q.add_argument(
        "-p",
        "--port",
        type=int,
        help="SMTP port (default: by --security: starttls 587, tls 465, none 25)",
    )
    q.add_argument(
        "--security",
        choices=("starttls", "tls", "none"),
        default="starttls",
        help="SMTP security (default: starttls)",
    )
    q.add_argument("--ca-file", metavar="FILE", help="CA bundle for SMTP and IMAP TLS")
    q.add_argument("-u", "--username", metavar="USER", help="SMTP AUTH user")
    q.add_argument("--password-file", metavar="FILE", help="file holding the SMTP password")
    q.add_argument(
        "--password-env",
        metavar="VAR",
        default=SMTP_PASSWORD_ENV,
        help=f"environment variable with the SMTP password (default: {SMTP_PASSWORD_ENV})",
    )
    q.add_argument("--password", "-P", nargs="?", action=_PasswordRefused, help=argparse.SUPPRESS)
    q.add_argument("--mail-from", metavar="ADDR", help="envelope sender (default: --username)")
    q.add_argument("--rcpt-to", metavar="ADDR", help="recipient whose mailbox is checked")
    q.add_argument("--imap-host", metavar="HOST", help="IMAP host of the recipient mailbox")
    q.add_argument(
        "--imap-port",
        type=int,
        help="IMAP port (default: by --imap-security: tls 993, starttls 143)",
    )
    q.add_argument(
        "--imap-security",
        type=_imap_security,
        choices=("starttls", "tls"),
        default="tls",
        help="IMAP security: tls (implicit, port 993) or starttls (default: tls)",
    )
    q.add_argument("--imap-username", metavar="USER", help="IMAP user (default: --rcpt-to)")
    q.add_argument("--imap-password-file", metavar="FILE", help="file with the IMAP password")
    q.add_argument(
        "--imap-password-env",
        metavar="VAR",
        default=IMAP_PASSWORD_ENV,
        help=f"environment variable with the IMAP password (default: {IMAP_PASSWORD_ENV})",
    )
    q.add_argument(
        "--delivery-timeout",
        type=float,
        metavar="SECONDS",
        help="give up waiting for the mail after SECONDS: CRITICAL (default: 300)",
    )
    q.add_argument(
        "--junk-folder",
        action="append",
        metavar="FOLDER",
        help="junk folder to look in (repeatable; default: Junk Email)",
    )
    q.add_argument(
        "--tag-secret-file",
        metavar="FILE",
        help="HMAC key for the probe tag (default: a fresh random key per run)",
    )

    e = p.add_argument_group("passive: read the last result of a running relayprobe")
    e.add_argument(
        "--from-exporter",
        dest="exporter",
        metavar="URL",
        help="relayprobe base URL, e.g. http://127.0.0.1:9833",
    )
    e.add_argument(
        "--max-age",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="a result older than SECONDS is stale (default: 900)",
    )
    e.add_argument(
        "--stale-state",
        choices=("warning", "critical", "unknown"),
        default="unknown",
        help="state for a stale result (default: unknown)",
    )
    e.add_argument("--exporter-username", metavar="USER", help="basic-auth user")
    e.add_argument("--exporter-password-file", metavar="FILE", help="basic-auth password file")
    e.add_argument(
        "--exporter-password-env",
        metavar="VAR",
        default=EXPORTER_PASSWORD_ENV,
        help=f"basic-auth password variable (default: {EXPORTER_PASSWORD_ENV})",
    )
    e.add_argument("--exporter-ca-file", metavar="FILE", help="CA bundle for an https URL")
    return p
