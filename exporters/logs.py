"""Logging for the daemon and the command line: one setup, one line per event (logfmt, JSON or text)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
        "level": _NAMES.get(record.levelno, "error"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    out["ts"] = str(out["ts"]).replace("+00:00", "Z")
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_") and value is not None:
            out[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        # Only the exception's type and text, on the same line: tracebacks break line-oriented logs.
        out["err"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        tb = record.exc_info[2]
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:  # where it was raised, so a one-line report is still actionable
            code = tb.tb_frame.f_code
            out["err_at"] = (
                f"{code.co_filename.rsplit('/', 2)[-1]}:{tb.tb_lineno} in {code.co_name}"
            )
    return out


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\\n\t') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=info logger=… msg="…" target=… stage=… reason=…`` (go-kit/promslog style)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same keys as the logfmt format."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


#: Third-party loggers held at WARNING whatever the level: imapclient and aiosmtplib would write
#: raw command lines, and those can carry credentials; the rest are chatty.
QUIET_LOGGERS = (
    "imapclient",
    "aiosmtplib",
    "apscheduler",
    "aiohttp.access",
    "msal",
    "mail.log",
    "pymap",
)
#: The probe core logs every SMTP/IMAP exchange at INFO: wanted under ``once -v``, not in a daemon.
PROTOCOL_LOGGERS = ("relayprobe.smtp", "relayprobe.imap")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    level: str = "info", fmt: str = "logfmt", *, protocol_steps: bool = False
) -> None:
    """Route every logger to stderr in ``fmt`` (logfmt, json or text); relayprobe's own at ``level``.

    The daemon shows protocol exchanges only at debug (hundreds of probes); the command line
    passes ``protocol_steps`` to show them at ``level``.
    """
    handler = logging.StreamHandler(sys.stderr)
    formatters = {
        "json": JsonFormatter(),
        "logfmt": LogfmtFormatter(),
        "text": logging.Formatter(_TEXT),
    }
    handler.setFormatter(formatters[fmt])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("relayprobe").setLevel(LEVELS[level])
    protocol = (
        LEVELS[level] if protocol_steps or level == "debug" else max(LEVELS[level], logging.WARNING)
    )
    for name in PROTOCOL_LOGGERS:
        logging.getLogger(name).setLevel(protocol)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def verbosity_level(verbose: int) -> str:
    """The level for ``-v`` counts: warnings by default, ``-v`` protocol steps, ``-vv`` everything."""
    return "warn" if verbose == 0 else "info" if verbose == 1 else "debug"
