"""OAuth costs on the local stand-in: MSAL token acquisition and XOAUTH2 logins (SMTP and IMAP).

Starts the same authority + Postfix/Dovecot pair the tests use (tests/oauth; needs the testbed's
Debian packages: bash tests/testbed/install.sh) and prints medians and p90s.

    .venv/bin/python bench/oauth_login.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
import imapclient  # noqa: E402

from probe.m365 import tokens as oauth  # noqa: E402
from probe.roundtrip import run_probe  # noqa: E402
from tests.oauth.fixture import _start  # noqa: E402


def row(name: str, samples: list[float]) -> str:
    p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
    return f"{name:44} {len(samples):>4} {statistics.median(samples) * 1000:>9.1f}ms {p90 * 1000:>9.1f}ms"


async def measure(env) -> list[str]:  # type: ignore[no-untyped-def]
    cfg = env.config()
    target = cfg.targets[0]
    rows = []
    cold = []
    for _ in range(20):
        oauth.clear_token_cache()
        provider = oauth.token_provider(target.smtp.auth, ca_file=env.ca_file)
        start = time.perf_counter()
        await provider()
        cold.append(time.perf_counter() - start)
    rows.append(row("token: new MSAL app (discovery + token POST)", cold))
    provider = oauth.token_provider(target.smtp.auth, ca_file=env.ca_file)
    token = await provider()
    cached = []
    for _ in range(200):
        start = time.perf_counter()
        await provider()
        cached.append(time.perf_counter() - start)
    rows.append(row("token: from relayprobe's cache", cached))
    ctx = ssl.create_default_context(cafile=str(env.ca_file))
    smtp = []
    for _ in range(30):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=20587, start_tls=True, tls_context=ctx)
        await client.connect()
        start = time.perf_counter()
        await client.auth_xoauth2(target.smtp.auth.username, token)
        smtp.append(time.perf_counter() - start)
        await client.quit()
    rows.append(row("SMTP AUTH XOAUTH2 (Postfix -> Dovecot oauth2)", smtp))
    read_token = await oauth.token_provider(target.mailbox.auth, ca_file=env.ca_file)()
    logins = []
    for _ in range(30):
        client = imapclient.IMAPClient("127.0.0.1", port=20993, ssl_context=ctx)
        start = time.perf_counter()
        client.oauth2_login(target.mailbox.auth.username, read_token)
        logins.append(time.perf_counter() - start)
        client.logout()
    rows.append(row("IMAP AUTHENTICATE XOAUTH2", logins))
    trips = []
    for _ in range(10):
        result = await run_probe(cfg, target)
        if result.status.value != "ok":
            raise SystemExit(f"round trip failed: {result.message}")
        trips.append(result.timings.total_seconds or 0.0)
    rows.append(row("full run_probe round trip (total_seconds)", trips))
    return rows


def main() -> int:
    env = _start()
    # run_probe finds its MSAL token source itself; this is how it trusts the stand-in's CA.
    os.environ["RELAYPROBE_OAUTH_CA_FILE"] = str(env.ca_file)
    try:
        print(
            f"stand-in (authority + Postfix + Dovecot) started in {env.pair.started_seconds:.2f} s"
        )
        print(f"{'what':44} {'runs':>4} {'median':>11} {'p90':>11}")
        for line in asyncio.run(measure(env)):
            print(line)
    finally:
        env.pair.stop()
        env.authority.stop()
        shutil.rmtree(env.pair.state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
