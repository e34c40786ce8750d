"""stdlib logging formatters for ``--log.format logfmt|json``: one line per event, context as fields."""

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


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    """Route every logger to stderr in ``fmt``; relayprobe's own loggers at ``level``.

    Protocol libraries stay at WARNING whatever the level: imapclient and aiosmtplib would
    write raw command lines, and those can carry credentials.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("relayprobe").setLevel(LEVELS[level])
    # The probe core logs every SMTP/IMAP exchange at INFO (useful for `once -v`); a daemon
    # running hundreds of probes shows them only at debug.
    protocol = logging.DEBUG if level == "debug" else max(LEVELS[level], logging.WARNING)
    for name in ("relayprobe.smtp", "relayprobe.imap"):
        logging.getLogger(name).setLevel(protocol)
    for noisy in ("imapclient", "aiosmtplib", "apscheduler", "aiohttp.access", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
