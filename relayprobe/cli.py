"""The ``relayprobe`` command line: every subcommand imported only when it runs (fast --help)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from probe import __version__

_EPILOG = """\
exit codes (every command; docs/architecture.md, "Exit codes"):
  0  ok: every probe (or check) passed
  1  warning: delivered, but slower than the warning threshold or not as expected (warning severity)
  2  critical: a probe (or doctor step) failed
  3  unknown: bad usage, a configuration error, a local problem (e.g. out of file descriptors),
     or (posture) DNS that did not answer
docs: README.md and docs/ in the source tree."""

_CONFIG_HELP = "the relayprobe YAML configuration (relayprobe validate checks it)"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 3 (UNKNOWN), like every other "cannot even start" outcome."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(3, f"{self.prog}: error: {message}\n")


def _add_config(parser: argparse.ArgumentParser) -> None:
    """The required ``--config FILE`` every subcommand that loads a config takes."""
    parser.add_argument(
        "--config", "--config.file", dest="config", required=True, metavar="FILE", help=_CONFIG_HELP
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relayprobe",
        description="Synthetic delivery probe for Microsoft 365 SMTP relay: sends tagged mail "
        "through a relay and confirms it over IMAP, with the receiver's verdict.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"relayprobe {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log protocol steps to stderr (secrets redacted); twice for more",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser(
        "run",
        help="the exporter daemon: scheduled probes, Prometheus metrics, status page "
        "(relayprobe run --help)",
        add_help=False,
    )
    doctor = sub.add_parser(
        "doctor", help="check a target step by step without sending mail, and say what to fix"
    )
    _add_config(doctor)
    doctor.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    doctor.add_argument(
        "--json", action="store_true", help="print every step (state, text, fix) as JSON"
    )

    login = sub.add_parser(
        "login",
        help="sign a user in with a device code for a target's oauth2 device_code auth and keep "
        "the refresh token in its token_cache_file",
    )
    _add_config(login)
    login.add_argument(
        "--target", required=True, metavar="NAME", help="the target whose user signs in"
    )

    once = sub.add_parser("once", help="run one probe per selected target and print the results")
    _add_config(once)
    once.add_argument(
        "--target", action="append", metavar="NAME", help="only this target (repeatable)"
    )
    once.add_argument(
        "--json", action="store_true", help="print the results (or the config errors) as JSON"
    )
    once.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress line while waiting (it is shown only when stderr is a terminal)",
    )

    analyze = sub.add_parser(
        "analyze", help="print the receiver's verdict from a saved message or header block"
    )
    analyze.add_argument("file", metavar="FILE", help="a .eml or pasted headers; - for stdin")
    analyze.add_argument("--json", action="store_true", help="print the verdict as JSON")

    explain = sub.add_parser(
        "explain",
        help="what a Microsoft 365 status code, SMTP reply or AADSTS error means, its likely "
        "cause and the admin action",
    )
    explain.add_argument(
        "code",
        nargs="+",
        metavar="CODE",
        help='an enhanced status code (5.7.139), a reply line ("550 5.7.515 Access denied, ..."), '
        "an AADSTS code or Entra error text as pasted from an NDR or a log; - for stdin",
    )
    explain.add_argument(
        "--json",
        action="store_true",
        help="print code, kind, reason, class, meaning, cause, action and docs link as JSON",
    )

    validate = sub.add_parser("validate", help="check a configuration file and list every error")
    # The positional CONFIG predates --config; both stay, one of them is required.
    where = validate.add_mutually_exclusive_group(required=True)
    where.add_argument("config", nargs="?", metavar="CONFIG", help="the config file")
    where.add_argument(
        "--config",
        "--config.file",
        dest="config_file",
        metavar="FILE",
        help="CONFIG as an option, like the other subcommands take it",
    )
    validate.add_argument(
        "--json", action="store_true", help="print the result (valid, errors, targets) as JSON"
    )

    posture = sub.add_parser(
        "posture",
        help="SPF, DKIM, DMARC, MX, MTA-STS and TLS-RPT of sending domains, one line per check",
    )
    posture.add_argument(
        "domain", nargs="*", metavar="DOMAIN", help="a sending domain (the part after @)"
    )
    posture.add_argument(
        "--config",
        "--config.file",
        dest="config",
        metavar="FILE",
        help="also check each target's mail_from domain with its posture settings",
    )
    posture.add_argument(
        "--target", action="append", metavar="NAME", help="with --config: only this target"
    )
    posture.add_argument(
        "--dns-server",
        metavar="IP[:PORT]",
        help="ask this DNS server (default: the system resolver, or posture.dns_server)",
    )
    posture.add_argument(
        "--dkim-selector",
        action="append",
        default=[],
        metavar="S",
        help="also check this DKIM selector (the mode's Microsoft selectors always; repeatable)",
    )
    posture.add_argument(
        "--ip", metavar="IP", help="also evaluate SPF for mail delivered from this address"
    )
    posture.add_argument(
        "--mode",
        default="submission",
        choices=["submission", "direct_send", "connector", "hve", "acs"],
        help="the relay mode: all but direct_send need Microsoft's SPF include (default submission)",
    )
    posture.add_argument(
        "--cloud",
        default="global",
        choices=["global", "gcc", "gcc_high", "dod", "china"],
        help="the Microsoft cloud whose SPF include is required (default global)",
    )
    posture.add_argument(
        "--tenant",
        metavar="NAME",
        help="the tenant's initial domain (contoso.onmicrosoft.com): DKIM CNAMEs must point there",
    )
    posture.add_argument(
        "--ca-file", metavar="FILE", help="trust this CA for the MTA-STS policy's HTTPS"
    )
    posture.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="per DNS lookup (default 5)"
    )
    posture.add_argument(
        "--json", action="store_true", help="print every check with its record value as JSON"
    )

    trace = sub.add_parser(
        "trace",
        help="Microsoft's message trace (Graph) of a target's latest or a given probe: status, "
        "events, the detail that explains it",
    )
    _add_config(trace)
    trace.add_argument("--target", required=True, metavar="NAME", help="the target whose probe")
    trace.add_argument(
        "--probe-id",
        metavar="ID",
        help="the probe's id (its subject, the result's probe_id); default: the latest one "
        "of a running daemon (--daemon)",
    )
    trace.add_argument(
        "--daemon",
        metavar="URL",
        help="a running relayprobe daemon (http://host:9833) whose latest result names the probe",
    )
    trace.add_argument(
        "--hours",
        type=float,
        default=48.0,
        metavar="H",
        help="with --probe-id: search this far back (default 48, at most 240: 10 days)",
    )
    trace.add_argument("--json", action="store_true", help="print the trace as JSON")

    demo = sub.add_parser(
        "demo",
        help="start an embedded mail system and probe it on a schedule (no Microsoft account)",
    )
    demo.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time between rounds of probes (default 10)",
    )
    demo.add_argument("--count", type=int, default=0, help="stop after N rounds (0: until Ctrl-C)")
    demo.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where keys and the demo config go (default: a new temporary directory)",
    )
    demo.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:9833",
        metavar="HOST:PORT",
        help="where the demo serves its status page and metrics (default 127.0.0.1:9833)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # The daemon has Prometheus-style flags of its own; it is presentation, so it lives in
        # exporters/ and is imported only for this command.
        from exporters.daemon import main as run_daemon

        return run_daemon(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 3
    from exporters.logs import setup_logging, verbosity_level

    setup_logging(verbosity_level(args.verbose), "text", protocol_steps=True)
    if args.command == "once":
        from relayprobe.once import run_once

        return run_once(args.config, targets=args.target, as_json=args.json, quiet=args.quiet)
    if args.command == "analyze":
        from relayprobe.analyze import run_analyze

        return run_analyze(args.file, as_json=args.json, out=sys.stdout, err=sys.stderr)
    if args.command == "explain":
        from relayprobe.explain import run_explain

        return run_explain(" ".join(args.code), as_json=args.json, out=sys.stdout, err=sys.stderr)
    if args.command == "validate":
        from relayprobe.validate import run_validate

        if args.config:
            print(
                "relayprobe: `validate CONFIG` is deprecated; use `validate --config CONFIG` "
                "like every other subcommand",
                file=sys.stderr,
            )
        return run_validate(args.config or args.config_file, as_json=args.json)
    if args.command == "posture":
        from relayprobe.posture import run_posture

        return run_posture(
            args.domain,
            config=args.config,
            targets=args.target,
            dns_server=args.dns_server,
            selectors=args.dkim_selector,
            ip=args.ip,
            mode=args.mode,
            cloud=args.cloud,
            tenant=args.tenant,
            ca_file=args.ca_file,
            timeout=args.timeout,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "demo":
        from relayprobe.demo import run_demo

        return run_demo(
            interval=args.interval, count=args.count, state_dir=args.state_dir, listen=args.listen
        )
    if args.command == "doctor":
        from relayprobe.doctor import run_doctor

        return run_doctor(
            args.config, targets=args.target, as_json=args.json, out=sys.stdout, err=sys.stderr
        )
    if args.command == "trace":
        from relayprobe.trace import run_trace

        return run_trace(
            args.config,
            args.target,
            probe_id=args.probe_id,
            daemon=args.daemon,
            hours=args.hours,
            as_json=args.json,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "login":
        from relayprobe.login import run_login

        return run_login(args.config, args.target, out=sys.stdout, err=sys.stderr)
    parser.error(f"unknown command {args.command}")
