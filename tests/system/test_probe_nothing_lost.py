"""Nothing is lost: 1,000 unrelated messages survive 100 probe runs in the same mailbox."""

from __future__ import annotations

import ssl

import imapclient
import pytest

from probe.result import Status
from probe.roundtrip import new_watch, run_probe
from tests.system.probe_configs import make_config, target_dict

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

USER = "sender@probe.test"  # a mailbox no other test probes into


def _client(tb):
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    client = imapclient.IMAPClient(tb.host, port=tb.imap_tls_port, ssl_context=ctx, timeout=30)
    client.login(USER, tb.users[USER])
    return client


def _unrelated(i: int) -> bytes:
    # Every tenth one looks like probe mail to a human (and to a careless SEARCH) but has no tag.
    subject = f"[relayprobe] delivery probe {i:016x} (relay)" if i % 10 == 0 else f"Invoice {i}"
    return (
        f"From: someone@partner.test\r\nTo: {USER}\r\nSubject: {subject}\r\n"
        f"Message-ID: <unrelated-{i}@partner.test>\r\n\r\nUnrelated message {i}.\r\n"
    ).encode()


def _unrelated_ids(client) -> set[bytes]:
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["HEADER", "Message-ID", "unrelated-"])
    fetched = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return {
        next(iter(v for k, v in d.items() if k.startswith(b"BODY"))).strip()
        for d in fetched.values()
    }


async def test_thousand_unrelated_messages_survive_hundred_probes(testbed):
    with _client(testbed) as client:
        client.select_folder("INBOX")
        stale = client.search(["HEADER", "Message-ID", "unrelated-"])
        if stale:  # a previous run of this test was interrupted; start from a known state
            client.delete_messages(stale)
            client.uid_expunge(stale)
        for start in range(0, 1000, 100):
            client.multiappend("INBOX", [_unrelated(i) for i in range(start, start + 100)])
        before = _unrelated_ids(client)
    assert len(before) == 1000

    target = target_dict(
        testbed,
        rcpt_to=USER,
        mailbox={"auth": {"method": "password", "username": USER, "password": testbed.users[USER]}},
    )
    config = make_config(testbed, target)
    # One watch for all runs, as the daemon does; each run still sends and deletes its probe.
    watch = new_watch(config, config.targets[0])
    await watch.start()
    try:
        statuses = [
            (await run_probe(config, config.targets[0], watch=watch)).status for _ in range(100)
        ]
    finally:
        await watch.stop()
    assert statuses.count(Status.OK) == 100, statuses

    with _client(testbed) as client:
        after = _unrelated_ids(client)
        client.select_folder("INBOX")
        total = len(client.search(["ALL"]))
        uids = client.search(["HEADER", "Message-ID", "unrelated-"])
        client.delete_messages(uids)
        client.uid_expunge(uids)
    assert after == before
    assert total == 1000  # and no probe mail left behind
