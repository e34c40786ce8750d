"""check_m365_relay: the Nagios/Icinga plugin entry point (options -> acquisition -> presentation)."""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from nagios.argspec import HelpRequested, UsageError

if TYPE_CHECKING:
    from nagios.options import Options
    from nagios.output import Problem, Rendered

# Everything else is imported where it is used: --help must start in well under 150 ms.

PASSIVE_TIMEOUT = 10.0
# Over the target's delivery timeout: the probe's own deadline (CRITICAL) should fire first.
ACTIVE_TIMEOUT_MARGIN = 30.0


def _emit(rendered: Rendered) -> NoReturn:
    sys.stdout.write(rendered.text)
    sys.stdout.flush()
    # os._exit, not sys.exit: after a timeout, a thread may still block in a socket read
    # (imapclient runs in threads) and interpreter shutdown would wait for it.
    os._exit(rendered.exit_code)


def _arm_watchdog(seconds: float, problem: Problem) -> None:
    """Backstop: SIGALRM at -t prints the timeout result and exits, whatever is blocking."""

    def fire(signum: int, frame: Any) -> None:
        from nagios.output import render_problem

        _emit(render_problem(problem))

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _passive(opts: Options) -> Rendered:
    import datetime as dt

    from nagios.output import render, timeout_problem
    from nagios.passive import fetch

    timeout = opts.timeout or PASSIVE_TIMEOUT
    _arm_watchdog(timeout, timeout_problem(timeout, opts.timeout_state, "passive", None))
    # The socket timeout is a little longer than -t, so the watchdog's message wins the race.
    observation = fetch(opts, timeout=timeout + 1.0)
    signal.setitimer(signal.ITIMER_REAL, 0)
    return render(observation, opts, now=dt.datetime.now(dt.UTC))


def _active(opts: Options) -> Rendered:
    import asyncio

    from nagios import active
    from nagios.output import Problem, render, timeout_problem
    from probe import ConfigError

    try:
        config, target = active.load(opts)
    except ConfigError as exc:
        where = f"config {opts.config}" if opts.mode == "config" else "the quick-check options"
        lines = tuple(f"\\_[UNKNOWN] {line}" for line in exc.errors)
        return render(Problem("unknown", f"invalid {where}: {exc.errors[0]}", lines), opts)
    target, opts = active.apply_options(target, opts)
    timeout = opts.timeout or target.timeout + ACTIVE_TIMEOUT_MARGIN
    problem = timeout_problem(timeout, opts.timeout_state, opts.mode, target.timeout)
    _arm_watchdog(timeout, problem)

    async def guarded() -> Any:
        # The graceful deadline: cancel the round trip a little before the SIGALRM backstop,
        # so run_probe's cleanup (IMAP logout, SMTP QUIT) gets a chance to run.
        try:
            async with asyncio.timeout(max(0.1, timeout - min(1.0, timeout / 10))):
                return await active.run(config, target)
        except TimeoutError:
            return problem

    from nagios.contexts import Observation

    outcome = asyncio.run(guarded())
    signal.setitimer(signal.ITIMER_REAL, 0)
    if isinstance(outcome, Problem):
        return render(outcome, opts)
    return render(Observation(outcome), opts)


def main(argv: list[str] | None = None) -> NoReturn:
    """Console script ``check_m365_relay``: prints the plugin output and exits 0/1/2/3."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if {"-h", "--help", "-V", "--version"} & set(args):
            from nagios.argspec import build_parser

            build_parser().parse_known_args(
                args
            )  # the fast path: argparse alone raises HelpRequested
        from nagios.options import parse_options

        opts = parse_options(args)
    except HelpRequested as req:
        sys.stdout.write(req.text)
        sys.stdout.flush()
        sys.exit(3)  # the guidelines: --help and --version end UNKNOWN
    except UsageError as exc:
        from nagios.output import render, usage_problem

        _emit(render(usage_problem(str(exc)), None))  # type: ignore[arg-type]
    from nagios.output import Problem, render, usage_problem

    try:
        rendered = _passive(opts) if opts.mode == "passive" else _active(opts)
    except UsageError as exc:
        rendered = render(usage_problem(str(exc)), opts)
    except Exception as exc:  # a bug: still a plugin answer, never a Python traceback alone
        import traceback

        detail = traceback.format_exc().splitlines() if opts.verbose >= 3 else []
        problem = Problem(
            "unknown",
            f"internal error ({type(exc).__name__}: {exc}); rerun with -vvv and report it",
            tuple(detail),
        )
        rendered = render(problem, opts)
    _emit(rendered)


if __name__ == "__main__":
    main()
