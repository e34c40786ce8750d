"""mailbox.protocol graph end to end: the testbed relay, the Graph stand-in over the real Dovecot."""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import ssl
import time
from collections.abc import Iterator

import imapclient
import pytest

from probe.message import build_message
from probe.result import Reason, Stage, Status
from probe.roundtrip import new_watch, run_probe
from probe.tag import make_tag
from relayprobe.trace import run_trace
from tests.graph.fixture import (  # noqa: F401
    GRAPH_SECRET,
    MAILBOX,
    TAG_SECRET,
    GraphEnv,
    graph,
    graph_env,
)

pytestmark = pytest.mark.testbed


@contextlib.contextmanager
def mailbox(env: GraphEnv) -> Iterator[imapclient.IMAPClient]:
    """The probe mailbox over IMAP, to look behind the stand-in (the test's own connection)."""
    ctx = ssl.create_default_context(cafile=str(env.tb.ca_file))
    client = imapclient.IMAPClient(env.tb.host, env.tb.imap_tls_port, ssl_context=ctx)
    client.login(MAILBOX, env.tb.users[MAILBOX])
    try:
        yield client
    finally:
        client.logout()


def append_probe_like(
    env: GraphEnv, folder: str, *, instance: str, run: str | None, secret: str, age: float = 0.0
) -> str:
    """A probe-shaped message (subject marker, tag header) appended straight into ``folder``;
    returns its Message-ID. ``secret`` other than the config's makes a forgery."""
    tag = make_tag(
        secret.encode(), instance=instance, target="other", run=run, now=time.time() - age
    )
    raw = build_message(tag=tag, mail_from="probe@probe.test", rcpt_to=MAILBOX)
    marker = f"<planted.{secrets.token_hex(6)}@probe.test>"
    raw = raw.replace(b"Message-ID: <", b"X-Planted: " + marker.encode() + b"\r\nMessage-ID: <", 1)
    with mailbox(env) as box:
        box.append(folder, raw)
    return marker


def planted(env: GraphEnv, folder: str, marker: str) -> int:
    with mailbox(env) as box:
        box.select_folder(folder, readonly=True)
        return len(box.search(["HEADER", "X-Planted", marker]))


async def test_delivered_to_inbox_read_and_deleted_over_graph(graph: GraphEnv) -> None:  # noqa: F811
    config = graph.config(graph.target("graph-inbox", "graphinbox"))
    result = await run_probe(config, config.targets[0])
    assert (result.status, result.reason) == (Status.OK, Reason.OK), result.message
    assert result.arrival.folder == "inbox" and result.arrival.placement == "inbox"
    # The verdict comes from internetMessageHeaders: the testbed's Authentication-Results.
    assert (result.verdict.auth.spf, result.verdict.auth.dkim, result.verdict.auth.dmarc) == (
        "pass",
        "pass",
        "pass",
    )
    assert result.trace is None  # trace is opt-in
    deletes = graph.standin.calls(f"/v1.0/users/{MAILBOX}/messages/")
    assert [c for c in deletes if c[1].startswith("DELETE")], "the own probe was not deleted"
    with mailbox(graph) as box:
        box.select_folder("INBOX", readonly=True)
        assert box.search(["HEADER", "Message-ID", f"relayprobe.{result.probe_id}."]) == []


async def test_junked_probe_is_reported_with_a_trace(graph: GraphEnv) -> None:  # noqa: F811
    target = graph.target("graph-junk", "junk", trace={"enabled": True})
    config = graph.config(target)
    result = await run_probe(config, config.targets[0])
    assert (result.reason, result.arrival.folder) == (Reason.JUNKED, "junkemail"), result.message
    assert result.status is Status.CRITICAL
    # Junked unexpectedly: message trace asked; Postfix delivered it, so Microsoft's status
    # (the stand-in's, from Postfix's log) is delivered and the reason stays junked.
    assert result.trace is not None and result.trace.status == "delivered", result.trace
    assert next(e.event for e in result.trace.events) == "Receive"
    assert "Deliver" in [e.event for e in result.trace.events]
    assert result.to_dict()["trace"]["status"] == "delivered"


def _drop_held(env: GraphEnv, rcpt: str) -> None:
    """Remove this test's held mail from the hold queue (never `tb switch release`: that would
    release other sessions' held mail too)."""
    from tests.testbed.tbkit.switches import postfix_cmd

    for record in env.standin.records():
        if record.recipient == rcpt and record.status in ("pending", "quarantined"):
            for qid in record.queue_ids:
                with contextlib.suppress(Exception):  # already gone
                    postfix_cmd(env.tb.state_dir, "postsuper", "-d", qid, "hold")


@pytest.mark.parametrize("quarantined", [False, True], ids=["pending", "quarantined"])
async def test_held_probe_times_out_and_the_trace_explains_it(
    graph: GraphEnv,  # noqa: F811
    tb_clean,
    quarantined: bool,
) -> None:
    rcpt = f"inbox+graphheld{int(quarantined)}@probe.test"
    tb_clean.switch("hold", rcpt)
    if quarantined:
        graph.standin.quarantine(rcpt)
    target = graph.target(
        "graph-held", f"graphheld{int(quarantined)}", timeout="4s", trace={"enabled": True}
    )
    config = graph.config(target)
    try:
        result = await run_probe(config, config.targets[0])
    finally:
        _drop_held(graph, rcpt)
    assert result.trace is not None, result.message
    kinds = [e.event for e in result.trace.events]
    assert kinds[0] == "Receive"
    if quarantined:
        assert (result.status, result.stage) == (Status.CRITICAL, Stage.DELIVER)
        assert result.reason is Reason.QUARANTINED, result.message
        assert result.trace.status == "quarantined" and "Quarantine" in kinds
        assert result.remedy is not None and "Quarantine" in result.remedy
        assert "quarantined" in result.message
    else:
        assert result.reason is Reason.DELIVERY_TIMEOUT
        assert result.trace.status == "pending" and "Defer" in kinds
        assert "message trace: pending" in result.message
        assert result.trace.detail is not None and "held" in result.trace.detail


async def test_forged_tags_are_ignored_and_kept(graph: GraphEnv) -> None:  # noqa: F811
    instance = f"graph-{secrets.token_hex(4)}"
    forged = append_probe_like(
        graph, "INBOX", instance=instance, run=None, secret="not-the-secret-0123456789"
    )
    config = graph.config(graph.target("graph-forged", "graphforged"), instance=instance)
    try:
        result = await run_probe(config, config.targets[0])
        assert result.reason is Reason.OK, result.message
        assert planted(graph, "INBOX", forged) == 1  # never deleted, never counted
        assert result.arrival.late_count == 0
    finally:
        with mailbox(graph) as box:
            box.select_folder("INBOX")
            box.delete_messages(box.search(["HEADER", "X-Planted", forged]))
            box.expunge()


async def test_only_own_verified_probes_are_deleted_and_others_stay_until_stale(
    graph: GraphEnv,  # noqa: F811
) -> None:
    instance = f"graph-{secrets.token_hex(4)}"
    # Another run (a concurrent `once` or check) of this config: its fresh mail is left alone;
    # its mail from two hours ago is provably stale and swept; the daemon's own late mail is
    # deleted and counted late.
    fresh_other = append_probe_like(
        graph, "INBOX", instance=instance, run="otherrun", secret=TAG_SECRET
    )
    stale_other = append_probe_like(
        graph, "INBOX", instance=instance, run="otherrun", secret=TAG_SECRET, age=7200
    )
    own_late = append_probe_like(graph, "INBOX", instance=instance, run=None, secret=TAG_SECRET)
    config = graph.config(graph.target("graph-own", "graphown"), instance=instance)
    late: list = []
    watch = new_watch(config, config.targets[0], on_late=late.append)
    try:
        await watch.start()  # the start-up sweep
        for _ in range(50):
            if late:
                break
            await __import__("asyncio").sleep(0.1)
        assert planted(graph, "INBOX", fresh_other) == 1
        assert planted(graph, "INBOX", stale_other) == 0
        assert planted(graph, "INBOX", own_late) == 0
        assert [f.tag.target for f in late] == ["other"]  # own late mail, counted
        result = await run_probe(config, config.targets[0], watch=watch, run_id=None)
        assert result.reason is Reason.OK, result.message
        assert planted(graph, "INBOX", fresh_other) == 1
    finally:
        await watch.stop()
        with mailbox(graph) as box:
            box.select_folder("INBOX")
            box.delete_messages(box.search(["HEADER", "X-Planted", fresh_other]))
            box.expunge()


async def test_a_thousand_unrelated_messages_are_untouched(graph: GraphEnv) -> None:  # noqa: F811
    folder = f"GraphBulk-{secrets.token_hex(3)}"
    with mailbox(graph) as box:
        box.create_folder(folder)
        for i in range(1000):
            subject = f"[relayprobe] look-alike {i}" if i % 100 == 0 else f"unrelated {i}"
            raw = (
                f"From: someone@partner.test\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n"
                f"Message-ID: <bulk.{i}@partner.test>\r\n\r\nbody {i}\r\n"
            ).encode()
            box.append(folder, raw)
        box.select_folder(folder, readonly=True)
        before = box.get_flags(box.search(["ALL"]))
    try:
        target = graph.target("graph-bulk", "graphbulk", junk_folders=["Junk Email", folder])
        config = graph.config(target)
        result = await run_probe(config, config.targets[0])
        assert result.reason is Reason.OK, result.message
        # The watch read the whole folder in pages (an initial delta round of 1,000) ...
        pages = [c for c in graph.standin.calls("/v1.0/users/") if "delta" in c[1]]
        assert len(pages) >= 10
        # ... and touched nothing: same messages, no flags.
        with mailbox(graph) as box:
            box.select_folder(folder, readonly=True)
            uids = box.search(["ALL"])
            assert len(uids) == 1000
            assert box.get_flags(uids) == before
            assert not [u for u, f in before.items() if b"\\Deleted" in f or b"\\Seen" in f]
    finally:
        with mailbox(graph) as box:
            box.delete_folder(folder)


async def test_429_with_retry_after_is_honoured_and_the_probe_still_found(
    graph: GraphEnv,  # noqa: F811
) -> None:
    config = graph.config(graph.target("graph-429", "graph429"))
    watch = new_watch(config, config.targets[0], run_id="g429")
    await watch.start()
    try:
        graph.standin.throttle(1, retry_after=2)  # the first poll after this answers 429
        result = await run_probe(config, config.targets[0], watch=watch)
    finally:
        await watch.stop()
    assert result.reason in (Reason.OK,), result.message
    calls = graph.standin.calls("/v1.0/users/")
    throttled = [c for c in calls if c[2] == 429]
    assert len(throttled) == 1
    after = [c for c in calls if c[0] > throttled[0][0]]
    assert after and after[0][0] - throttled[0][0] >= 2.0  # not one request before Retry-After
    assert watch.throttled and watch.throttled[0][1] == 2.0


async def test_persistent_429_is_throttling_not_a_delivery_failure(
    graph: GraphEnv,  # noqa: F811
) -> None:
    config = graph.config(graph.target("graph-429s", "graph429s", timeout="4s"))
    watch = new_watch(config, config.targets[0], run_id="g429s")
    await watch.start()
    try:
        graph.standin.throttle(10_000, retry_after=1)
        result = await run_probe(config, config.targets[0], watch=watch)
    finally:
        graph.standin.throttle(0)
        await watch.stop()
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.GRAPH_THROTTLED)
    assert "429" in result.message and "Retry-After 1 s" in result.message
    assert result.remedy is not None and "10,000 requests per 10 minutes" in result.remedy


async def test_graph_5xx_during_the_wait_is_graph_failed(graph: GraphEnv) -> None:  # noqa: F811
    config = graph.config(graph.target("graph-503", "graph503", timeout="3s"))
    watch = new_watch(config, config.targets[0], run_id="g503")
    await watch.start()
    try:
        graph.standin.fail(10_000, status=503)
        result = await run_probe(config, config.targets[0], watch=watch)
    finally:
        graph.standin.fail(0)
        await watch.stop()
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.GRAPH_FAILED)
    assert "HTTP 503 ServiceNotAvailable" in result.message


async def test_an_app_outside_its_mailbox_scope_is_access_denied(
    graph: GraphEnv,  # noqa: F811
) -> None:
    target = graph.target("graph-scope", "graphscope")
    target["mailbox"]["auth"] = graph.auth("app-graph-elsewhere")  # scoped to sender@probe.test
    config = graph.config(target)
    result = await run_probe(config, config.targets[0])
    assert (result.stage, result.reason) == (Stage.DELIVER, Reason.GRAPH_ACCESS_DENIED)
    assert "HTTP 403 ErrorAccessDenied" in result.message
    assert f"/v1.0/users/{MAILBOX}/mailFolders/inbox" in result.message
    assert "RBAC for Applications" in (result.remedy or "")
    text = json.dumps(result.to_dict())
    assert graph.authority.tokens and not [t for t in graph.authority.tokens if t in text]
    assert GRAPH_SECRET not in text and "Bearer" not in text  # never a token or the secret


async def test_a_read_only_app_reads_but_cannot_delete(graph: GraphEnv) -> None:  # noqa: F811
    target = graph.target("graph-ro", "graphro")
    target["mailbox"]["auth"] = graph.auth("app-graph-readonly")  # Mail.Read only
    config = graph.config(target)
    result = await run_probe(config, config.targets[0])
    assert (result.status, result.reason) == (Status.WARNING, Reason.CLEANUP_FAILED)
    assert "403 ErrorAccessDenied" in result.message
    with mailbox(graph) as box:  # clean up what the app could not
        box.select_folder("INBOX")
        box.delete_messages(box.search(["HEADER", "Message-ID", f"relayprobe.{result.probe_id}."]))
        box.expunge()


def _documented_trace_command() -> list[str]:
    """The `relayprobe trace` line of docs/configuration.md, split into arguments."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("relayprobe trace --config"))
    return shlex.split(line)


async def test_relayprobe_trace_as_documented_traces_a_given_probe(
    graph: GraphEnv,  # noqa: F811
    tmp_path,
) -> None:
    import os
    import subprocess
    import sys

    import yaml

    target = graph.target("graph-cli", "graphcli", trace={"enabled": True})
    config = graph.config(target)
    result = await run_probe(config, config.targets[0])
    assert result.reason is Reason.OK and result.probe_id, result.message
    path = tmp_path / "relayprobe.yaml"
    path.write_text(yaml.safe_dump({"tag_secret": TAG_SECRET, "targets": [target]}))
    argv = _documented_trace_command()
    values = {"--config": str(path), "--target": "graph-cli", "--probe-id": result.probe_id}
    argv = [values.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    env = {**os.environ, "RELAYPROBE_OAUTH_CA_FILE": str(graph.ca_file)}
    done = subprocess.run(
        [sys.executable, "-m", *argv, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr  # delivered: exit 0 (docs/architecture.md)
    trace = json.loads(done.stdout)
    assert (trace["target"], trace["probe_id"], trace["status"]) == (
        "graph-cli",
        result.probe_id,
        "delivered",
    )
    assert [e["event"] for e in trace["events"]][-1] == "Deliver"
    plain = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert plain.returncode == 0 and "Microsoft's message trace: delivered" in plain.stdout


def test_the_daemon_counts_shows_and_serves_a_quarantine_trace(
    graph: GraphEnv,  # noqa: F811
    tb_clean,
    tmp_path,
) -> None:
    """A graph target under the real daemon: its held probe is traced as quarantined, and the
    metrics (born at 0, then 1), /api/results and the status page say so."""
    from tests.system.daemon_helpers import http, ready, start_daemon, stop, value, wait_for

    rcpt = "inbox+graphdaemon@probe.test"
    tb_clean.switch("hold", rcpt)
    graph.standin.quarantine(rcpt)
    target = graph.target(
        "graph-daemon", "graphdaemon", timeout="4s", interval="1h", trace={"enabled": True}
    )
    doc = {
        "instance": f"graph-{secrets.token_hex(4)}",
        "tag_secret": TAG_SECRET,
        "targets": [target],
    }
    env = {"RELAYPROBE_OAUTH_CA_FILE": str(graph.ca_file)}
    d = start_daemon(graph.tb, tmp_path, doc, env=env)
    try:
        wait_for("/-/ready", lambda: ready(d), 20)
        born = d.metrics()
        assert (
            value(born, "relayprobe_trace_total", target="graph-daemon", status="quarantined") == 0
        )
        result = wait_for(
            "the traced result",
            lambda: (r := d.results().get("graph-daemon")) and r.get("trace") and r,
            40,
        )
        assert result["reason"] == "quarantined" and result["trace"]["status"] == "quarantined"
        samples = d.metrics()
        assert (
            value(samples, "relayprobe_trace_total", target="graph-daemon", status="quarantined")
            == 1
        )
        assert (
            value(samples, "relayprobe_trace_total", target="graph-daemon", status="pending") == 0
        )
        status, page, _ = http(f"{d.url}/target/graph-daemon")
        assert status == 200 and "Message trace" in page and "quarantined" in page
        # relayprobe trace --daemon: the latest probe of the target, from /api/results.
        out = io.StringIO()
        code = run_trace(str(d.config), "graph-daemon", daemon=d.url, as_json=True, out=out)
        again = json.loads(out.getvalue())
        assert (code, again["probe_id"], again["status"]) == (2, result["probe_id"], "quarantined")
    finally:
        stop(d.proc)
        _drop_held(graph, rcpt)


def test_doctor_checks_a_graph_mailbox_without_touching_it(
    graph: GraphEnv,  # noqa: F811
    tmp_path,
) -> None:

    import yaml

    from relayprobe.doctor import run_doctor

    good = graph.target("graph-doctor", "graphdoctor")
    denied = graph.target("graph-doctor-denied", "graphdoctor")
    denied["mailbox"]["auth"] = graph.auth("app-graph-elsewhere")
    path = tmp_path / "relayprobe.yaml"
    path.write_text(yaml.safe_dump({"tag_secret": TAG_SECRET, "targets": [good, denied]}))
    out = io.StringIO()
    assert run_doctor(str(path), targets=None, as_json=True, out=out) == 2
    steps = {
        t["target"]: {s["step"]: s["state"] for s in t["steps"]}
        for t in json.loads(out.getvalue())["targets"]
    }
    assert steps["graph-doctor"]["graph-token"] == "ok"
    assert steps["graph-doctor"]["graph-folders"] == "ok"
    assert steps["graph-doctor-denied"]["graph-folders"] == "fail"
    assert not [c for c in graph.standin.calls() if c[1].startswith("DELETE")]


def test_the_stand_in_checks_audience_roles_expiry_and_signature(
    graph: GraphEnv,  # noqa: F811
) -> None:
    """The stand-in is only as honest as its token check: what Graph refuses, it refuses."""
    import time as _time

    import requests

    from tests.oauth.authority import AUDIENCE, GRAPH_AUDIENCE

    url = f"{graph.standin.base}/v1.0/users/{MAILBOX}/mailFolders/inbox"
    now = int(_time.time())
    base = {
        "iss": graph.authority.issuer,
        "appid": "app-graph",
        "roles": ["Mail.ReadWrite"],
        "iat": now,
        "nbf": now,
    }

    def call(claims: dict) -> tuple[int, str]:
        token = graph.authority.sign(claims, record=False)
        answer = requests.get(
            url, headers={"Authorization": f"Bearer {token}"}, verify=str(graph.ca_file), timeout=10
        )
        return answer.status_code, answer.json()["error"][
            "code"
        ] if answer.status_code >= 400 else ""

    assert call({**base, "aud": GRAPH_AUDIENCE, "exp": now + 600}) == (200, "")
    assert call({**base, "aud": GRAPH_AUDIENCE, "exp": now - 600}) == (
        401,
        "InvalidAuthenticationToken",
    )
    assert call({**base, "aud": AUDIENCE, "exp": now + 600}) == (401, "InvalidAuthenticationToken")
    assert call({**base, "aud": GRAPH_AUDIENCE, "exp": now + 600, "roles": []}) == (
        403,
        "ErrorAccessDenied",
    )
    forged = requests.get(
        url,
        headers={"Authorization": "Bearer " + "eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0."},
        verify=str(graph.ca_file),
        timeout=10,
    )
    assert forged.status_code == 401


async def test_a_probe_arriving_after_its_timeout_is_counted_late_and_removed(
    graph: GraphEnv,  # noqa: F811
    tb_clean,
) -> None:
    import asyncio

    rcpt = "inbox+graphlate@probe.test"
    tb_clean.switch("delay", "6", rcpt)  # delivered 6 s after the relay accepts it
    config = graph.config(graph.target("graph-late", "graphlate", timeout="2s"))
    late: list = []
    watch = new_watch(config, config.targets[0], on_late=late.append, run_id="glate")
    await watch.start()
    try:
        result = await run_probe(config, config.targets[0], watch=watch)
        assert result.reason is Reason.DELIVERY_TIMEOUT, result.message
        for _ in range(150):
            if late:
                break
            await asyncio.sleep(0.1)
    finally:
        await watch.stop()
    assert [(f.tag.probe_id, f.deleted, f.expected) for f in late] == [
        (result.probe_id, True, False)
    ]
    with mailbox(graph) as box:
        box.select_folder("INBOX", readonly=True)
        assert box.search(["HEADER", "Message-ID", f"relayprobe.{result.probe_id}."]) == []
