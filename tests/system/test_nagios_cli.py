"""The installed check_m365_relay as a process: options, exit codes, passive mode over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.result import Arrival, Reason, Status, rfc3339
from tests.unit.test_nagios_output import PERF_PHASES, SMTP_OK, delivered

PLUGIN = str(Path(sys.executable).parent / "check_m365_relay")
SECRET = "s3cret-hunter2"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[str, int, str]:
    proc = subprocess.run(
        [PLUGIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": os.environ["PATH"], **(env or {})},  # like a core: a minimal environment
    )
    return proc.stdout, proc.returncode, proc.stderr


class Exporter:
    """Stand-in for relayprobe's GET /api/results on 127.0.0.1 (a real http.server).

    The passive checks against the real daemon on the local mail system (OK, CRITICAL, stale) are
    in tests/test_nagios_passive_daemon.py. This stand-in stays for what that daemon cannot be made
    to do on demand: answer HTTP 500, answer too slowly for -t, refuse the connection once stopped,
    or serve an exact result (Microsoft-only verdicts such as compauth and SCL, which the local
    mail system never stamps, or a fixed age or date) so the whole output can be compared. The
    junk and basic-auth cases could use the daemon too; they stay here as they need no mail system.
    It serves the daemon's shape, {"results": [ProbeResult.to_dict() + "finished_at"]}.
    """

    def __init__(self) -> None:
        self.document: Any = {"results": []}
        self.status = 200
        self.delay = 0.0
        self.auth: str | None = None
        self.requests: list[str] = []
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                exporter.requests.append(self.path)
                time.sleep(exporter.delay)
                if exporter.auth and self.headers.get("Authorization") != exporter.auth:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="relayprobe"')
                    self.end_headers()
                    return
                body = json.dumps(exporter.document).encode()
                self.send_response(
                    exporter.status if self.path.split("?")[0] == "/api/results" else 404
                )
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, result: Any, finished_at: dt.datetime) -> None:
        item = {**result.to_dict(), "finished_at": rfc3339(finished_at)}
        self.document = {"results": [{**item, "target": "other"}, item]}


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    ex = Exporter()
    ex.thread.start()
    yield ex
    ex.delay = 0
    ex.server.shutdown()
    ex.server.server_close()


def passive_args(ex: Exporter, *more: str) -> list[str]:
    return ["--from-exporter", ex.url, "--target", "m365-submission", *more]


def test_help_and_version_exit_unknown() -> None:
    out, code, _ = run("-h")
    assert code == 3
    assert out.startswith("usage: check_m365_relay --config FILE --target NAME")
    assert "--password-file" in out and "--from-exporter" in out
    out, code, _ = run("--version")
    assert (code, out) == (3, "check_m365_relay 0.1.0 (relayprobe)\n")


def test_no_mode_is_unknown_with_usage() -> None:
    out, code, _ = run()
    assert code == 3
    assert out.splitlines()[0] == (
        "M365 RELAY UNKNOWN - invalid options: say what to check: --config FILE --target NAME,"
        " -H HOST ..., or --from-exporter URL --target NAME"
    )
    assert all(len(line) <= 80 for line in out.splitlines()[1:])


@pytest.mark.parametrize(
    "args",
    [
        ["--password", SECRET],
        [f"--password={SECRET}"],
        ["-P", SECRET],
        [f"--pasword={SECRET}"],
        ["--passw", SECRET],
    ],
)
def test_password_on_the_command_line_is_refused_without_echoing_it(args: list[str]) -> None:
    out, code, err = run("-H", "smtp.example.com", *args)
    assert code == 3
    assert out.startswith("M365 RELAY UNKNOWN - invalid options: ")
    assert SECRET not in out and SECRET not in err


def test_passive_fresh_result_full_output(exporter: Exporter) -> None:
    finished = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=42)
    exporter.publish(delivered(), finished)
    t0 = time.monotonic()
    out, code, err = run(*passive_args(exporter, "-w", "60", "-c", "300", "--max-age", "600"))
    slack = int(time.monotonic() - t0) + 1
    expected = [
        "M365 RELAY OK - m365-submission: delivered to INBOX in 12.4s"
        f" | delivery=12.4s;60;300;0 {PERF_PHASES} total=12.8s;;;0 scl=1;;;-1;9 age={age}s;;;0\n"
        f"{SMTP_OK}\n"
        "\\_[OK] delivery: INBOX (inbox) after 12.4s\n"
        "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=pass\n"
        "\\_[OK] spam: SCL 1\n"
        f"\\_[OK] result: {age}s old (max 600s) from {exporter.url}/api/results\n"
        for age in range(42, 42 + slack + 1)
    ]
    assert (out, code, err) in [(e, 0, "") for e in expected]
    # Asks for this target only, without history (older daemons ignore the query).
    assert exporter.requests == ["/api/results?target=m365-submission&history=0"]


def test_passive_stale_result_full_output(exporter: Exporter) -> None:
    finished = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    exporter.publish(delivered(), finished)
    age = int((dt.datetime.now(dt.UTC) - finished).total_seconds())
    out, code, _ = run(*passive_args(exporter, "--max-age", "900"))
    first, rest = out.split("\n", 1)
    assert first in [
        f"M365 RELAY UNKNOWN - m365-submission: last result is {a}s old (max 900s) | age={a}s;;;0"
        for a in (age, age + 1, age + 2)
    ]
    assert (rest, code) == (
        f"\\_[UNKNOWN] result: from {exporter.url}/api/results, finished 2026-01-02T03:04:05.000Z\n"
        "last result (not evaluated): ok ok: delivered to INBOX in 12.40 s;"
        " spf=pass dkim=pass dmarc=pass\n"
        "remedy: check that relayprobe is running and probing this target (its log and"
        " /-/healthy); --max-age must exceed the probe interval plus its timeout\n",
        3,
    )
    assert run(*passive_args(exporter, "--stale-state", "critical"))[1] == 2


def test_passive_unknown_target_names_the_known_ones(exporter: Exporter) -> None:
    exporter.publish(delivered(), dt.datetime.now(dt.UTC))
    out, code, _ = run("--from-exporter", exporter.url, "--target", "nope")
    assert (out, code) == (
        f"M365 RELAY UNKNOWN - no result for target 'nope' at {exporter.url}/api/results\n"
        "\\_[UNKNOWN] targets with results: other, m365-submission; check --target, or wait for"
        " the first run\n",
        3,
    )


def test_passive_exporter_down_or_broken_is_unknown(exporter: Exporter) -> None:
    exporter.status = 500
    out, code, _ = run(*passive_args(exporter))
    assert (out.splitlines()[0], code) == (
        f"M365 RELAY UNKNOWN - exporter {exporter.url}/api/results answered HTTP 500"
        " Internal Server Error",
        3,
    )
    port = exporter.server.server_address[1]
    exporter.server.shutdown()
    exporter.server.server_close()
    out, code, _ = run("--from-exporter", f"http://127.0.0.1:{port}", "--target", "x")
    assert (out, code) == (
        f"M365 RELAY UNKNOWN - cannot read exporter http://127.0.0.1:{port}/api/results:"
        " Connection refused\n\\_[UNKNOWN] is relayprobe running and listening there?\n",
        3,
    )


def test_passive_result_of_a_failed_probe_keeps_its_critical_state(exporter: Exporter) -> None:
    failed = delivered(
        status=Status.CRITICAL,
        arrival=Arrival("Junk Email", "junk"),
        reason=Reason.JUNKED,
        message='the probe landed in the junk folder "Junk Email"',
    )
    exporter.publish(failed, dt.datetime.now(dt.UTC))
    out, code, _ = run(*passive_args(exporter))
    assert code == 2
    assert out.startswith("M365 RELAY CRITICAL - m365-submission: delivered to junk folder Junk")


def test_watchdog_timeout_is_unknown_and_overridable(exporter: Exporter) -> None:
    exporter.delay = 5
    t0 = time.monotonic()
    out, code, _ = run(*passive_args(exporter, "-t", "1"))
    took = time.monotonic() - t0
    assert (out, code) == (
        "M365 RELAY UNKNOWN - plugin timed out after 1s (-t)\n"
        "\\_[UNKNOWN] the exporter did not answer in time: check that relayprobe is running and"
        " reachable\n",
        3,
    )
    assert took < 3
    out, code, _ = run(*passive_args(exporter, "-t", "1", "--timeout-state", "critical"))
    assert (out.splitlines()[0], code) == (
        "M365 RELAY CRITICAL - plugin timed out after 1s (-t)",
        2,
    )


def test_exporter_basic_auth_password_from_env_never_printed(exporter: Exporter) -> None:
    exporter.auth = "Basic " + base64.b64encode(f"nagios:{SECRET}".encode()).decode()
    exporter.publish(delivered(), dt.datetime.now(dt.UTC))
    args = passive_args(exporter, "--exporter-username", "nagios", "-vvv")
    out, code, err = run(*args, env={"RELAYPROBE_EXPORTER_PASSWORD": SECRET})
    assert code == 0, out
    assert SECRET not in out + err
    out, code, _ = run(*args, env={"RELAYPROBE_EXPORTER_PASSWORD": "wrong"})
    assert (out.splitlines()[0], code) == (
        f"M365 RELAY UNKNOWN - exporter {exporter.url}/api/results answered HTTP 401 Unauthorized",
        3,
    )


def test_quick_check_without_a_password_source_is_unknown() -> None:
    out, code, _ = run(
        "-H",
        "127.0.0.1",
        "-u",
        "probe@probe.test",
        "--rcpt-to",
        "inbox@probe.test",
        "--imap-host",
        "127.0.0.1",
    )
    assert (out.splitlines()[0], code) == (
        "M365 RELAY UNKNOWN - invalid options: no SMTP password for probe@probe.test: set the"
        " RELAYPROBE_SMTP_PASSWORD environment variable or --password-file",
        3,
    )


def test_config_errors_are_unknown_and_name_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "relayprobe.yaml"
    cfg.write_text(
        textwrap.dedent("""\
        tag_secret_file: missing-secret
        targets:
          - name: m365
            smtp: {host: 127.0.0.1, port: 587, securty: starttls}
    """)
    )
    out, code, _ = run("--config", str(cfg), "--target", "m365")
    assert code == 3
    first = out.splitlines()[0]
    assert first.startswith(f"M365 RELAY UNKNOWN - invalid config {cfg}: ")
    assert "securty" in out and 'did you mean "security"' in out
    out, code, _ = run("--config", str(tmp_path / "absent.yaml"), "--target", "m365")
    assert code == 3
    assert "cannot read config file" in out.splitlines()[0]


# --- end to end: the installed plugin against the local mail system (tests/testbed) ----------
# A real Postfix (submission, DKIM signing, SPF/DMARC checks) and Dovecot (IMAP, junk sieve).


def quick_args(tb: Any, rcpt: str = "inbox@probe.test", *more: str) -> list[str]:
    return [
        "-H", tb.host, "-p", str(tb.submission_port), "--ca-file", str(tb.ca_file),
        "-u", "probe@probe.test", "--rcpt-to", rcpt, "--imap-username", "inbox@probe.test",
        "--imap-host", tb.host, "--imap-port", str(tb.imap_tls_port), "--target", "testbed",
        "--delivery-timeout", "20", *more,
    ]  # fmt: skip


def tb_env(tb: Any, smtp_password: str | None = None) -> dict[str, str]:
    return {
        "RELAYPROBE_SMTP_PASSWORD": smtp_password or tb.users["probe@probe.test"],
        "RELAYPROBE_IMAP_PASSWORD": tb.users["inbox@probe.test"],
    }


PERF = re.compile(
    r" \| delivery=[\d.]+s;(?P<w>[^;]*);(?P<c>[^;]*);0 smtp_connect=[\d.]+s;;;0 "
    r"smtp_tls=[\d.]+s;;;0 smtp_auth=[\d.]+s;;;0 smtp_submit=[\d.]+s;;;0 total=[\d.]+s;;;0$"
)


@pytest.fixture
def late_target(testbed: Any) -> Iterator[str]:
    """A target name for a probe that arrives late; afterwards, wait for that mail and delete it.

    The plugin gives up on it (timeout tests), and a quick check's random tag key means no later
    run sweeps it: the test removes its own leftover from the shared mailbox, found by the target
    name in its X-Relayprobe-Tag header.
    """
    import imaplib
    import ssl

    import imapclient

    name = f"nagios-late-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    yield name
    ctx = ssl.create_default_context(cafile=str(testbed.ca_file))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with imapclient.IMAPClient(
                testbed.host, port=testbed.imap_tls_port, ssl_context=ctx
            ) as c:
                c.login("inbox@probe.test", testbed.users["inbox@probe.test"])
                c.select_folder("INBOX")
                found = c.search(["HEADER", "X-Relayprobe-Tag", f"t={name};"])
                if found:
                    c.delete_messages(found)
                    c.expunge()
                    return
        except (OSError, imaplib.IMAP4.error):
            pass  # the shared testbed may be restarting: best-effort cleanup, try again
        time.sleep(0.5)


@pytest.mark.testbed
def test_e2e_ok_with_thresholds_and_required_auth(testbed: Any) -> None:
    out, code, err = run(
        *quick_args(
            testbed,
            "inbox@probe.test",
            "-w",
            "5",
            "-c",
            "10",
            "--expect-spf",
            "pass",
            "--expect-dkim",
            "pass",
            "--expect-dmarc",
            "pass",
        ),
        env=tb_env(testbed),
    )
    lines = out.splitlines()
    assert code == 0, out + err
    head = "M365 RELAY OK - testbed: delivered to INBOX in "
    assert lines[0].startswith(head), out
    assert (m := PERF.search(lines[0])) and (m["w"], m["c"]) == ("5", "10"), lines[0]
    assert lines[1].startswith("\\_[OK] SMTP 127.0.0.1:10587: connect ")
    assert lines[2].startswith("\\_[OK] delivery: INBOX (inbox) after ")
    assert lines[3] == "\\_[OK] authentication: spf=pass dkim=pass dmarc=pass compauth=none"
    assert SECRET not in out and testbed.users["probe@probe.test"] not in out


@pytest.mark.testbed
def test_e2e_warning_by_latency_from_a_config_file(testbed: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "relayprobe.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
        tag_secret: "${{TAG}}"
        targets:
          - name: relay
            smtp:
              host: {testbed.host}
              port: {testbed.submission_port}
              ca_file: {testbed.ca_file}
              auth: {{method: password, username: probe@probe.test,
                      password: "${{RELAYPROBE_SMTP_PASSWORD}}"}}
            mail_from: probe@probe.test
            rcpt_to: inbox@probe.test
            mailbox:
              host: {testbed.host}
              port: {testbed.imap_tls_port}
              ca_file: {testbed.ca_file}
              auth: {{method: password, username: inbox@probe.test,
                      password: "${{RELAYPROBE_IMAP_PASSWORD}}"}}
            timeout: 20s
            thresholds: {{warning: 10s, critical: 15s}}
    """)
    )
    env = {**tb_env(testbed), "TAG": "nagios-e2e-tag-secret-0123456789"}
    # The config's thresholds apply (and show in perfdata) unless -w/-c say otherwise.
    out, code, _ = run("--config", str(cfg), "--target", "relay", env=env)
    assert code == 0, out
    assert (m := PERF.search(out.splitlines()[0])) and (m["w"], m["c"]) == ("10", "15"), out
    out, code, _ = run(
        "--config", str(cfg), "--target", "relay", "-w", "0.001", "-c", "10", env=env
    )
    assert code == 1, out
    assert re.match(
        r"M365 RELAY WARNING - relay: delivery took [\d.]+s, outside range 0:0\.001 \| ", out
    ), out


@pytest.mark.testbed
def test_e2e_junk_placement_and_its_severity(testbed: Any) -> None:
    out, code, _ = run(*quick_args(testbed, "inbox+junk@probe.test"), env=tb_env(testbed))
    assert code == 2, out
    assert out.startswith("M365 RELAY CRITICAL - testbed: delivered to junk folder Junk Email | ")
    assert "\\_[CRITICAL] delivery: Junk Email (junk) after " in out
    out, code, _ = run(
        *quick_args(testbed, "inbox+junk@probe.test", "--junk-severity", "warning"),
        env=tb_env(testbed),
    )
    assert code == 1, out
    assert out.startswith("M365 RELAY WARNING - testbed: delivered to junk folder Junk Email | ")


@pytest.mark.testbed
def test_e2e_smtp_auth_failure_is_critical(testbed: Any) -> None:
    out, code, _ = run(*quick_args(testbed), env=tb_env(testbed, smtp_password=SECRET))
    assert code == 2, out
    assert re.match(
        r"M365 RELAY CRITICAL - testbed: SMTP AUTH rejected by 127\.0\.0\.1:10587 \(535 5\.7\.8\)"
        r" \| smtp_connect=[\d.]+s;;;0 smtp_tls=[\d.]+s;;;0\n",
        out,
    ), out
    assert "remedy: " in out and SECRET not in out


@pytest.mark.testbed
def test_e2e_relay_rejection_is_critical(testbed: Any) -> None:
    rcpt = f"nagios-reject-{os.getpid()}@probe.test"
    testbed.switch("reject", rcpt)  # only this recipient: other sessions share the testbed
    try:
        out, code, _ = run(*quick_args(testbed, rcpt), env=tb_env(testbed))
    finally:
        testbed.switch("unset", rcpt)
    assert code == 2, out
    assert out.startswith(
        "M365 RELAY CRITICAL - testbed: relay 127.0.0.1:10587 rejected the mail (550 5.1.1) | "
    ), out
    assert "RESOLVER.ADR.RecipientNotFound" in out


@pytest.mark.testbed
def test_e2e_missed_delivery_deadline_is_critical(testbed: Any, late_target: str) -> None:
    args = quick_args(testbed, "inbox+delay5@probe.test")  # the testbed holds it back 5 s
    args[args.index("--delivery-timeout") + 1] = "2"
    args[args.index("--target") + 1] = late_target
    out, code, _ = run(*args, env=tb_env(testbed))
    assert code == 2, out
    assert out.startswith(f"M365 RELAY CRITICAL - {late_target}: mail not delivered before the")
    assert "\\_[CRITICAL] delivery: not found in the watched folders" in out


@pytest.mark.testbed
def test_e2e_plugin_timeout_is_unknown(testbed: Any, late_target: str) -> None:
    args = quick_args(testbed, "inbox+delay5@probe.test", "-t", "2")
    args[args.index("--target") + 1] = late_target
    t0 = time.monotonic()
    out, code, _ = run(*args, env=tb_env(testbed))
    assert time.monotonic() - t0 < 4.5
    assert (out, code) == (
        "M365 RELAY UNKNOWN - plugin timed out after 2s (-t)\n"
        "\\_[UNKNOWN] the round trip may take up to the delivery timeout (20s) plus the SMTP"
        " phases: raise -t above it (and the core's check timeout above -t) or lower the"
        " delivery timeout\n",
        3,
    )
