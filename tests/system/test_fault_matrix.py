"""Every fault on real servers through `relayprobe once --json`, judged by the Reasons table."""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imapclient
import pytest
import requests
import trustme
import yaml

from tests.oauth import fixture as oauth_fixture
from tests.oauth.authority import SCOPE
from tests.oauth.fixture import INBOX, READ_SECRET, OAuthEnv, oauth, oauth_env  # noqa: F401
from tests.system.daemon_helpers import (
    ROOT,
    TAG_SECRET,
    Daemon,
    http,
    ready,
    start_daemon,
    stop,
    wait_for,
)
from tests.system.probe_configs import target_dict
from tests.testbed.api import Testbed

pytestmark = pytest.mark.testbed

#: Nagios plugin exit codes by status (relayprobe/cli.py: 0 ok, 1 warning, 2 critical, 3 unknown).
NAGIOS = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
STAGES = {"config", "connect", "tls", "auth", "submit", "deliver", "verify", "cleanup", "done"}
#: The fault cases log in to and probe into this mailbox. inbox@probe.test is everyone's default
#: and other sessions' daemons fill its 10 IMAP connections per user and IP (Dovecot [LIMIT]).
MAILBOX = "probe@probe.test"
RUN_TIMEOUT = 120.0


# --- running `relayprobe once` -------------------------------------------------------------------
@dataclass
class Outcome:
    """One `relayprobe once --json` process: exit code, the first result, the raw output."""

    label: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    result: dict[str, Any] | None = None

    def brief(self) -> str:
        r = self.result
        if r is None:
            tail = " | ".join(self.stderr.strip().splitlines()[-2:])
            return f"[{self.label}] exit {self.returncode}, no JSON result; stderr ends: {tail}"
        shown = {k: r.get(k) for k in ("status", "stage", "reason", "message", "remedy")}
        return f"[{self.label}] exit {self.returncode}: {json.dumps(shown)}"


def tb_env(tb: Testbed) -> dict[str, str]:
    """The passwords and tag secret as environment variables, like daemon_helpers.start_daemon."""
    return {
        **os.environ,
        "TB_PROBE_PASSWORD": tb.users["probe@probe.test"],
        "TB_INBOX_PASSWORD": tb.users["inbox@probe.test"],
        "TB_TAG_SECRET": TAG_SECRET,
    }


def oauth_process_env(env: OAuthEnv) -> dict[str, str]:
    return {**os.environ, "RELAYPROBE_OAUTH_CA_FILE": str(env.ca_file)}


def start_once(
    config: Path, env: dict[str, str], preexec: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "relayprobe", "once", "--config", str(config), "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def finish(proc: subprocess.Popen[str], label: str, started: float) -> Outcome:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    outcome = Outcome(label, proc.returncode, out, err, time.monotonic() - started)
    try:
        results = json.loads(out)["results"]
    except (ValueError, KeyError, TypeError):
        return outcome
    if len(results) == 1:
        outcome.result = results[0]
    return outcome


def run_once(
    config: Path,
    env: dict[str, str],
    label: str = "once",
    preexec: Callable[[], None] | None = None,
) -> Outcome:
    started = time.monotonic()
    return finish(start_once(config, env, preexec), label, started)


def write_config(tmp: Path, doc: dict[str, Any], name: str = "once.yml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tb_target(tb: Testbed, **over: Any) -> dict[str, Any]:
    """A submission target probing into MAILBOX (6 s deadline unless overridden)."""
    base = target_dict(
        tb,
        "fault",
        rcpt_to=MAILBOX,
        mailbox={
            "auth": {"method": "password", "username": MAILBOX, "password": "${TB_PROBE_PASSWORD}"}
        },
        timeout="6s",
        thresholds={"warning": "4s", "critical": "5s"},
    )
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def tb_config(ctx: Ctx, **over: Any) -> Path:
    doc = {
        "instance": f"fm-{secrets.token_hex(4)}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [tb_target(ctx.tb, **over)],
    }
    return write_config(ctx.tmp, doc)


def oauth_config(ctx: Ctx, target: dict[str, Any]) -> Path:
    doc = {
        "instance": f"fm-oauth-{secrets.token_hex(4)}",
        "tag_secret": oauth_fixture.TAG_SECRET,
        "targets": [target],
    }
    return write_config(ctx.tmp, doc)


# --- the cases -----------------------------------------------------------------------------------
@dataclass
class Ctx:
    tb: Testbed
    tmp: Path
    request: pytest.FixtureRequest
    leftovers: list[str]  # probe ids of accepted probes that may still land in MAILBOX

    @property
    def oauth(self) -> OAuthEnv:
        return self.request.getfixturevalue("oauth")


Check = Callable[[dict[str, Any], Outcome], list[str]]


@dataclass
class Fault:
    name: str
    status: str
    stage: str | None  # None: any stage (internal_error)
    reason: str
    run: Callable[[Ctx], list[Outcome]]
    checks: list[Check] = field(default_factory=list)


def message_has(*parts: str) -> Check:
    def check(r: dict[str, Any], _o: Outcome) -> list[str]:
        return [f"message lacks {p!r}" for p in parts if p not in (r.get("message") or "")]

    return check


def message_starts(prefix: str) -> Check:
    def check(r: dict[str, Any], _o: Outcome) -> list[str]:
        msg = r.get("message") or ""
        return [] if msg.startswith(prefix) else [f"message does not start with {prefix!r}"]

    return check


def one_line_without_trace(r: dict[str, Any], _o: Outcome) -> list[str]:
    msg = r.get("message") or ""
    out = []
    if "\n" in msg or "\r" in msg:
        out.append("message spans several lines (Entra's CR LF text not flattened)")
    if "Trace ID" in msg or "Correlation ID" in msg:
        out.append("message carries Entra's Trace ID / Correlation ID lines")
    return out


def reply_code(code: int) -> Check:
    def check(r: dict[str, Any], _o: Outcome) -> list[str]:
        got = (r.get("smtp") or {}).get("reply_code")
        return [] if got == code else [f"smtp.reply_code {got}, expected {code}"]

    return check


def not_in_output(secret: str) -> Check:
    def check(_r: dict[str, Any], o: Outcome) -> list[str]:
        return ["the secret appears in the output"] if secret in o.stdout + o.stderr else []

    return check


# OAuth stand-in -------------------------------------------------------------------------------
def fixed_read_token(env: OAuthEnv) -> str:
    """An app-read token fetched now, for a mailbox side that needs no authority later."""
    answer = requests.post(
        f"{env.authority.url}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "app-read",
            "client_secret": READ_SECRET,
            "scope": SCOPE,
        },
        verify=str(env.ca_file),
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def authority_outage(kind: str, side: str, **kw: Any) -> Callable[[Ctx], list[Outcome]]:
    """The authority fails while `once` runs; side "imap" (both sides oauth2: the mailbox logs in
    first, so its token request meets the outage) or "smtp" (the mailbox holds a fixed token)."""

    def run(ctx: Ctx) -> list[Outcome]:
        env = ctx.oauth
        target = env.target()
        if side == "smtp":
            token = fixed_read_token(env)
            target["mailbox"]["auth"] = {"method": "token", "username": INBOX, "token": token}
        config = oauth_config(ctx, target)
        env.authority.outage(kind, **kw)  # type: ignore[arg-type]
        try:
            return [run_once(config, oauth_process_env(env))]
        finally:
            env.authority.restore()

    return run


def wrong_client_secret(ctx: Ctx) -> list[Outcome]:
    env = ctx.oauth
    target = env.target(smtp_auth=env.auth(client_secret=WRONG_SECRET))
    return [run_once(oauth_config(ctx, target), oauth_process_env(env))]


WRONG_SECRET = "Wx9~fault-matrix-not-the-secret"


def oauth_imap_unavailable(ctx: Ctx) -> list[Outcome]:
    env = ctx.oauth
    config = oauth_config(ctx, env.target())
    env.pair.imap_unavailable(True)
    try:
        return [run_once(config, oauth_process_env(env))]
    finally:
        env.pair.imap_unavailable(False)


# Mail testbed ---------------------------------------------------------------------------------
def tb_case(**over: Any) -> Callable[[Ctx], list[Outcome]]:
    def run(ctx: Ctx) -> list[Outcome]:
        return [run_once(tb_config(ctx, **over), tb_env(ctx.tb))]

    return run


def late_case(**over: Any) -> Callable[[Ctx], list[Outcome]]:
    """An accepted probe that lands after the deadline: cleaned up at the end of the module."""

    def run(ctx: Ctx) -> list[Outcome]:
        outcome = run_once(tb_config(ctx, **over), tb_env(ctx.tb))
        if outcome.result and outcome.result.get("probe_id"):
            ctx.leftovers.append(outcome.result["probe_id"])
        return [outcome]

    return run


def queue_id(result: dict[str, Any]) -> str | None:
    match = re.search(r"queued as ([0-9A-F]+)", (result.get("smtp") or {}).get("reply") or "")
    return match.group(1) if match else None


def hold(ctx: Ctx) -> list[Outcome]:
    rcpt = f"probe+fmhold{secrets.token_hex(3)}@probe.test"
    ctx.tb.switch("hold", rcpt)  # cleared by tb_clean
    outcome = run_once(tb_config(ctx, rcpt_to=rcpt), tb_env(ctx.tb))
    qid = queue_id(outcome.result or {})
    if qid:  # delete just this held message (`tb switch release` would release everyone's)
        subprocess.run(
            ["postsuper", "-c", str(ctx.tb.state_dir / "postfix"), "-d", qid, "hold"],
            capture_output=True,
            check=False,
        )
    return [outcome]


def wrong_ca(ctx: Ctx) -> list[Outcome]:
    other = ctx.tmp / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return tb_case(smtp={"ca_file": str(other)})(ctx)


def imap_authtemp(ctx: Ctx) -> list[Outcome]:
    config = tb_config(ctx)
    ctx.tb.switch("authtemp", "on", MAILBOX)
    try:
        return [run_once(config, tb_env(ctx.tb))]
    finally:
        ctx.tb.switch("authtemp", "off", MAILBOX)


def _nofile(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


def descriptor_exhaustion(ctx: Ctx) -> list[Outcome]:
    """From just above the descriptors Python needs to start and load the config up to the first
    limit where the round trip succeeds: every run in between is out of descriptors somewhere."""
    config = tb_config(ctx)
    env = tb_env(ctx.tb)
    validate = [sys.executable, "-m", "relayprobe", "validate", "--config", str(config), "--json"]
    base = next(
        n
        for n in range(3, 64)
        if subprocess.run(
            validate, cwd=ROOT, env=env, capture_output=True, preexec_fn=_nofile(n)
        ).returncode
        == 0
    )
    starved: list[Outcome] = []
    for limit in range(base + 1, 96):
        outcome = run_once(config, env, f"RLIMIT_NOFILE={limit}", preexec=_nofile(limit))
        if outcome.result is not None and outcome.result.get("status") == "ok":
            break
        starved.append(outcome)
    else:
        pytest.fail(f"no limit up to 95 descriptors let the probe through: {starved[-1].brief()}")
    assert starved, f"the probe succeeded with {base + 1} descriptors: nothing was starved"
    return starved


def _submitted_since(tb: Testbed, offset: int) -> bool:
    """Has a submission session with DATA ended in postfix.log after byte ``offset``?"""
    with open(tb.state_dir / "log" / "postfix.log", "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return bool(re.search(r"postfix/submission/smtpd\[\d+\]: disconnect from .* data=1", text))


def relay_usable(tb: Testbed) -> bool:
    """Submission AUTH and an IMAP login both work (Postfix throttles smtpd for 60 s after it
    died on a missing SASL backend during a Dovecot outage)."""
    try:
        ctx = ssl.create_default_context(cafile=str(tb.ca_file))
        with smtplib.SMTP(tb.host, tb.submission_port, timeout=3) as smtp:
            smtp.starttls(context=ctx)
            smtp.login("probe@probe.test", tb.users["probe@probe.test"])
        with imapclient.IMAPClient(tb.host, tb.imap_tls_port, ssl_context=ctx, timeout=5) as c:
            c.login(MAILBOX, tb.users[MAILBOX])
        return True
    except (OSError, smtplib.SMTPException, imapclient.exceptions.IMAPClientError):
        return False


def dovecot_outage(
    rcpt: str, timeout: str, *, down_for: float | None
) -> Callable[[Ctx], list[Outcome]]:
    """Start `once`, stop Dovecot once the probe was submitted; start it again after ``down_for``
    seconds, or (None) only after `once` has finished."""

    def run(ctx: Ctx) -> list[Outcome]:
        tb = ctx.tb
        config = tb_config(
            ctx,
            rcpt_to=rcpt,
            timeout=timeout,
            thresholds={"warning": "15s", "critical": "18s"},
        )
        log_offset = (tb.state_dir / "log" / "postfix.log").stat().st_size
        started = time.monotonic()
        proc = start_once(config, tb_env(tb))
        restarted = False
        try:
            wait_for("the probe's submission", lambda: _submitted_since(tb, log_offset), 15)
            time.sleep(0.3)  # the IMAP watch is waiting now
            tb.stop_service("dovecot")
            if down_for is not None:
                time.sleep(down_for)
                tb.start_service("dovecot")
                restarted = True
            outcome = finish(proc, "once", started)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if not restarted:
                tb.start_service("dovecot")
        wait_for("submission and IMAP usable again", lambda: relay_usable(tb), 90)
        if outcome.result and outcome.result.get("status") != "ok":
            ctx.leftovers.append(outcome.result.get("probe_id") or "")
        return [outcome]

    return run


FAULTS = [
    Fault(
        "authority_down",
        "critical",
        "deliver",
        "oauth_unavailable",
        authority_outage("down", "imap"),
        [message_starts("deliver: IMAP token")],
    ),
    Fault(
        "authority_down_smtp_side",
        "critical",
        "auth",
        "oauth_unavailable",
        authority_outage("down", "smtp"),
    ),
    Fault(
        "authority_503",
        "critical",
        "deliver",
        "oauth_unavailable",
        authority_outage("503", "imap"),
        [
            message_starts("deliver: IMAP token"),
            message_has("AADSTS90033"),
            one_line_without_trace,
        ],
    ),
    Fault(
        "authority_503_smtp_side",
        "critical",
        "auth",
        "oauth_unavailable",
        authority_outage("503", "smtp"),
        [message_has("AADSTS90033"), one_line_without_trace],
    ),
    Fault(
        "authority_429",
        "critical",
        "deliver",
        "oauth_unavailable",
        authority_outage("429", "imap", retry_after=1),
        [message_starts("deliver: IMAP token"), one_line_without_trace],
    ),
    Fault(
        "authority_429_smtp_side",
        "critical",
        "auth",
        "oauth_unavailable",
        authority_outage("429", "smtp", retry_after=1),
        [one_line_without_trace],
    ),
    Fault(
        "wrong_client_secret",
        "critical",
        "auth",
        "oauth_token_failed",
        wrong_client_secret,
        [message_has("AADSTS7000215"), one_line_without_trace, not_in_output(WRONG_SECRET)],
    ),
    Fault(
        "oauth_imap_unavailable",
        "critical",
        "deliver",
        "imap_failed",
        oauth_imap_unavailable,
        [message_has("UNAVAILABLE")],
    ),
    Fault(
        "delay_past_deadline",  # early: its probe lands ~25 s later, during the other cases
        "critical",
        "deliver",
        "delivery_timeout",
        late_case(rcpt_to="probe+delay30@probe.test"),
    ),
    Fault(
        "relay_defer",
        "critical",
        "submit",
        "smtp_temporary_failure",
        tb_case(rcpt_to="probe+defer@probe.test"),
        [reply_code(451), message_has("RCPT TO refused")],
    ),
    Fault(
        "relay_reject",
        "critical",
        "submit",
        "smtp_rejected",
        tb_case(rcpt_to="probe+reject@probe.test"),
        [reply_code(550)],
    ),
    Fault(
        "relay_throttle",
        "critical",
        "submit",
        "throttled",
        tb_case(rcpt_to="probe+throttle@probe.test"),
        [reply_code(451), message_has("4.7.500")],
    ),
    Fault("hold", "critical", "deliver", "delivery_timeout", hold, [reply_code(250)]),
    Fault("wrong_ca", "critical", "tls", "tls_failed", wrong_ca, [message_has("certificate")]),
    Fault(
        "no_starttls",
        "critical",
        "tls",
        "starttls_unavailable",
        lambda ctx: tb_case(smtp={"port": ctx.tb.plain_port})(ctx),
    ),
    Fault(
        "imap_unavailable",
        "critical",
        "deliver",
        "imap_failed",
        imap_authtemp,
        [message_has("UNAVAILABLE")],
    ),
    Fault(
        "descriptor_exhaustion",
        "unknown",
        None,
        "internal_error",
        descriptor_exhaustion,
        [message_has("out of file descriptors")],
    ),
    Fault(
        "imap_killed_during_wait",
        "critical",
        "deliver",
        "imap_failed",
        dovecot_outage("probe+delay10@probe.test", "20s", down_for=None),
        [reply_code(250)],
    ),
    Fault(
        "imap_back_during_wait",
        "ok",
        "done",
        "ok",
        dovecot_outage("probe+delay8@probe.test", "25s", down_for=3.0),
    ),
]
EXCLUSIVE = {"imap_killed_during_wait", "imap_back_during_wait"}


def problems_of(fault: Fault, o: Outcome) -> list[str]:
    r = o.result
    if r is None:
        return ["no single JSON result on stdout"]
    out = []
    got = (r.get("status"), r.get("stage"), r.get("reason"))
    want = (fault.status, fault.stage or got[1], fault.reason)
    if got != want:
        out.append(f"status/stage/reason {'/'.join(map(str, got))}, expected {'/'.join(want)}")
    if r.get("stage") not in STAGES:
        out.append(f"unknown stage {r.get('stage')!r}")
    remedy = r.get("remedy")
    if fault.status == "ok":
        if remedy is not None:
            out.append(f"an ok result carries a remedy {remedy!r}")
    elif not (isinstance(remedy, str) and remedy.strip()):
        out.append(f"remedy {remedy!r} is not a non-empty string")
    expected_rc = NAGIOS.get(str(r.get("status")))
    if o.returncode != expected_rc:
        out.append(f"exit code {o.returncode}, expected {expected_rc} for {r.get('status')}")
    for check in fault.checks:
        out.extend(check(r, o))
    return out


# --- fixtures --------------------------------------------------------------------------------------
def _delete_probe(tb: Testbed, probe_id: str) -> bool:
    """Delete MAILBOX's copies of one probe mail; True when one was found."""
    ctx = ssl.create_default_context(cafile=str(tb.ca_file))
    found = False
    with imapclient.IMAPClient(tb.host, tb.imap_tls_port, ssl_context=ctx, timeout=10) as c:
        c.login(MAILBOX, tb.users[MAILBOX])
        for folder in ("INBOX", "Junk Email"):
            c.select_folder(folder)
            uids = c.search(["SUBJECT", probe_id])
            if uids:
                found = True
                c.delete_messages(uids)
                c.uid_expunge(uids)
    return found


@pytest.fixture(scope="module")
def leftovers(testbed: Testbed) -> Iterator[list[str]]:
    """Probe ids whose mail lands after its run; removed from MAILBOX when the module ends."""
    ids: list[str] = []
    yield ids
    pending = [i for i in ids if i]
    deadline = time.monotonic() + 45
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if not _delete_probe(testbed, i)]
        if pending:
            time.sleep(1)


@pytest.fixture(scope="module")
def daemon(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A running daemon with one healthy target: a direct send (no SMTP AUTH, so no Dovecot SASL)
    into the MX, confirmed in MAILBOX; it must stay healthy through every fault."""
    target = tb_target(
        testbed,
        smtp={"port": testbed.mx_port},
        mail_from="healthy@partner.test",  # partner.test: SPF pass for 127.0.0.1, DMARC p=none
        interval="5s",
        jitter=0,
    )
    target["name"] = "healthy"
    target["expect"] = {"spf": "pass", "dmarc": "pass", "placement": "inbox"}  # not DKIM-signed
    del target["smtp"]["auth"]
    doc = {
        "instance": f"fm-daemon-{secrets.token_hex(4)}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [target],
    }
    d = start_daemon(testbed, tmp_path_factory.mktemp("fault-daemon"), doc)
    try:
        wait_for("/-/ready", lambda: ready(d), 20)
        wait_for("a first ok run", lambda: d.results().get("healthy", {}).get("success"), 30)
        yield d
    finally:
        stop(d.proc)


def healthy_within(d: Daemon, seconds: float = 2.0) -> str | None:
    """None when GET /-/healthy answers 200 within ``seconds``, else what went wrong."""
    if d.proc.poll() is not None:
        return f"daemon exited ({d.proc.returncode}): {d.log.read_text()[-2000:]}"
    started = time.monotonic()
    try:
        status, body, _ = http(f"{d.url}/-/healthy", timeout=seconds)
    except OSError as exc:
        return f"/-/healthy failed: {exc!r}"
    took = time.monotonic() - started
    if status != 200 or took > seconds:
        return f"/-/healthy answered {status} in {took:.2f} s: {body!r}"
    return None


# --- the test ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(
            f, id=f.name, marks=[pytest.mark.testbed_exclusive] if f.name in EXCLUSIVE else []
        )
        for f in FAULTS
    ],
)
def test_fault(
    fault: Fault,
    daemon: Daemon,
    tb_clean: Testbed,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    leftovers: list[str],
) -> None:
    outcomes = fault.run(Ctx(tb_clean, tmp_path, request, leftovers))
    problems = []
    for o in outcomes:
        print(o.brief())  # the actual results, for the report (pytest -rA)
        found = problems_of(fault, o)
        if found:
            problems.append(o.brief() + "".join(f"\n    -> {p}" for p in found))
    unhealthy = healthy_within(daemon)
    if unhealthy:
        problems.append(f"daemon: {unhealthy}")
    expected = f"{fault.status}/{fault.stage or '<any>'}/{fault.reason}"
    assert not problems, f"{fault.name}: expected {expected}\n" + "\n".join(problems)
