"""A shared watch that logged out between rare probes logs in again before the next probe is sent."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import imapclient
import pytest

from probe.imap.watch import MailboxWatch
from probe.imap.watcher import WatchSettings
from probe.result import Reason, Stage, Status
from probe.roundtrip import run_probe
from tests.system.probe_configs import make_config, target_dict
from tests.testbed.api import Testbed
from tests.testbed.tbkit.config import TENANT_PASSWORD_FORMAT, TENANT_USER_FORMAT

pytestmark = [pytest.mark.testbed]

# A tenant mailbox of its own (tests/testbed/README.md "Users"; test_shards and bench/scale.py use
# others), so the authtemp switch below disturbs nobody.
N = 598
USER = TENANT_USER_FORMAT % N


def _target(tb: Testbed) -> dict[str, Any]:
    auth = {"method": "password", "username": USER, "password": TENANT_PASSWORD_FORMAT % N}
    target = target_dict(tb, "relogin", mail_from=USER, rcpt_to=USER, timeout="60s")
    target["smtp"]["auth"] = auth
    target["mailbox"]["auth"] = auth
    return target


def _probe_mail(tb: Testbed, instance: str) -> int:
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    with imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30) as c:
        c.login(USER, TENANT_PASSWORD_FORMAT % N)
        c.select_folder("INBOX", readonly=True)
        return len(c.search(["HEADER", "X-Relayprobe-Tag", instance]))


async def _logged_out(watch: MailboxWatch) -> None:
    t0 = time.monotonic()
    while any(w.connected for w in watch.watchers):
        assert time.monotonic() - t0 < 15, "the watch never logged out after its linger"
        await asyncio.sleep(0.1)


async def test_probe_after_logout_logs_in_first_and_a_refused_login_sends_nothing(
    tb_clean: Testbed,
) -> None:
    config = make_config(tb_clean, _target(tb_clean))
    target = config.targets[0]
    watch = MailboxWatch(
        target.mailbox,
        target.junk_folders,
        secret=config.tag_secret.get().encode(),
        instance=config.instance,
        settings=WatchSettings(short_linger=0.5, linger_interval=0.2),
    )
    await watch.start()
    try:
        await _logged_out(watch)  # rare probes: logged out between them
        ok = await run_probe(config, target, watch=watch, run_id=None)
        assert ok.status is Status.OK, ok.message
        await _logged_out(watch)

        tb_clean.switch("authtemp", "on", USER)
        t0 = time.monotonic()
        refused = await run_probe(config, target, watch=watch, run_id=None)
        took = time.monotonic() - t0
        # The login's own failure, before anything was sent: not a delivery timeout after 60 s.
        assert (refused.status, refused.reason, refused.stage) == (
            Status.CRITICAL,
            Reason.IMAP_FAILED,
            Stage.DELIVER,
        ), refused.message
        assert "failed temporarily" in refused.message and "[UNAVAILABLE]" in refused.message
        assert refused.smtp is None and took < target.timeout / 2
        tb_clean.switch("authtemp", "off", USER)
        assert _probe_mail(tb_clean, config.instance) == 0  # the first one was deleted, no new one
    finally:
        tb_clean.switch("authtemp", "off", USER)
        await watch.stop()
