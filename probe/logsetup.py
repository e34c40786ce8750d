"""Logging for the command line: stderr, one line per event, protocol steps under --verbose."""

from __future__ import annotations

import logging
import sys


def setup_cli_logging(verbose: int) -> None:
    """Warnings by default; ``-v`` shows relayprobe's protocol steps, ``-vv`` everything of ours.

    Third-party protocol loggers stay at WARNING whatever the verbosity: imapclient and
    aiosmtplib would otherwise write raw command lines, and those can carry credentials.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("relayprobe").setLevel(level)
    for noisy in ("imapclient", "aiosmtplib", "mail.log", "pymap", "apscheduler", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
