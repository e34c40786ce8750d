"""Run in a child process by tests/test_secrets_leak.py: exercise every OAuth path and print it all.

argv: config.yml LOGLEVEL ("cli" = relayprobe's -vv setup, "all" = every logger at DEBUG).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import traceback

from exporters.logs import setup_logging
from probe.config import load_config
from probe.failure import ProbeFailure
from probe.m365 import tokens as oauth
from probe.roundtrip import run_probe
from relayprobe.doctor import run_doctor
from relayprobe.once import format_results


async def main(path: str) -> None:
    config = load_config(path)
    print(repr(config), config.model_dump_json())
    for target in config.targets:
        smtp = oauth.token_provider(target.smtp.auth) if target.smtp.auth else None
        imap = oauth.token_provider(target.mailbox.auth)
        try:
            await smtp()  # type: ignore[misc]
        except ProbeFailure as exc:
            # Everything an exception can show: str, repr, args, traceback with locals' names.
            print(str(exc), repr(exc), exc.args, exc.remedy, file=sys.stderr)
            traceback.print_exception(exc)
        result = await run_probe(config, target, smtp_token=smtp, imap_token=imap)
        print(json.dumps(result.to_dict()))
        print(format_results([result]))
        logging.getLogger("relayprobe.test").debug("result %r", result)


if __name__ == "__main__":
    path, level = sys.argv[1], sys.argv[2]
    setup_logging("debug", "text", protocol_steps=True)
    if level == "all":
        logging.getLogger().setLevel(logging.DEBUG)
        for name in ("imapclient", "aiosmtplib", "msal", "urllib3", "asyncio"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    asyncio.run(main(path))
    out, err = io.StringIO(), io.StringIO()
    run_doctor(path, targets=None, out=out, err=err)
    print(out.getvalue())
    print(err.getvalue(), file=sys.stderr)
