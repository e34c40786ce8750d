"""``relayprobe doctor``: check each target step by step without sending mail, and say what to fix."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import smtplib
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from cryptography import x509

from probe import tls
from probe.config import ConfigError, load_config
from probe.failure import ProbeFailure
from probe.imap import session as imap
from probe.m365.authority import authority_of
from probe.m365.codes import IMAP_OAUTH_REMEDY
from probe.m365.tokens import token_provider
from probe.smtp.replies import classify_auth_reply, classify_submit_reply
from relayprobe.selection import load_selected
from relayprobe.validate import dump_json, problems_json

if TYPE_CHECKING:
    from probe.config import Auth, Target

CERT_WARN_DAYS = 14


class _Stop(Exception):
    """A step failed and the steps after it depend on it."""


@dataclass
class _Report:
    """Prints each step as it runs, or with ``as_json`` collects them for one JSON document."""

    out: TextIO
    as_json: bool = False
    failed: int = 0
    targets: list[dict[str, Any]] = field(default_factory=list)

    def _step(self, state: str, step: str, text: str, fix: str | None = None) -> None:
        if self.targets:
            self.targets[-1]["steps"].append(
                {"step": step, "state": state, "text": text, "fix": fix}
            )

    def heading(self, target: Target | None, text: str) -> None:
        if target is not None:
            self.targets.append({"target": target.name, "steps": []})
        if not self.as_json:
            print(text, file=self.out)

    def ok(self, step: str, text: str) -> None:
        self._step("ok", step, text)
        if not self.as_json:
            print(f"  ok    {step:<12}{text}", file=self.out)

    def warn(self, step: str, text: str, fix: str) -> None:
        self._step("warn", step, text, fix)
        if not self.as_json:
            print(f"  WARN  {step:<12}{text}\n        fix: {fix}", file=self.out)

    def fail(self, step: str, text: str, fix: str | None, *, stop: bool = True) -> None:
        self.failed += 1
        self._step("fail", step, text, fix)
        if not self.as_json:
            print(f"  FAIL  {step:<12}{text}", file=self.out)
            if fix:
                print(f"        fix: {fix}", file=self.out)
        if stop:
            raise _Stop

    def skip(self, step: str, why: str) -> None:
        self._step("skip", step, f"skipped ({why})")
        if not self.as_json:
            print(f"  -     {step:<12}skipped ({why})", file=self.out)


def _one_line(text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split())


def _dns(r: _Report, host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        r.fail("dns", f"cannot resolve {host} ({exc})", "check the host name and this host's DNS")
    r.ok("dns", f"{host} -> {', '.join(sorted({str(i[4][0]) for i in infos}))}")


def _tcp(r: _Report, host: str, port: int, timeout: float) -> None:
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        r.fail(
            "tcp",
            f"{host}:{port}: {exc}",
            "check the port, that the relay listens, and "
            "firewalls in between (outbound 25 is often blocked by ISPs and clouds)",
        )
    r.ok("tcp", f"{host}:{port} connected in {time.monotonic() - start:.3f} s")


def _tls(r: _Report, sock: Any, host: str) -> None:
    version, cipher, not_after = tls.describe(sock)
    cert = sock.getpeercert() if sock is not None else None
    names = [v for k, v in (cert or {}).get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    text = f"{version} {cipher}; certificate for {', '.join(names[:4]) or '?'} (name checked)"
    if not_after is not None:
        days = (not_after - dt.datetime.now(dt.UTC)).days
        text += f", valid until {not_after:%Y-%m-%d} ({days} days)"
        if days < CERT_WARN_DAYS:
            r.warn("tls", text, f"the relay's certificate for {host} expires in {days} days")
            return
    r.ok("tls", text)


def _client_cert(r: _Report, target: Target) -> None:
    path = target.smtp.client_cert_file
    if path is None:
        return
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        r.fail("client-cert", f"{path}: {exc}", "client_cert_file must be a PEM certificate")
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    subject = cert.subject.rfc4514_string()
    text = f"{subject}, valid until {cert.not_valid_after_utc:%Y-%m-%d} ({days} days)"
    if days < 0:
        r.fail(
            "client-cert",
            text + ": EXPIRED",
            "renew the certificate and update the "
            "connector (Set-InboundConnector -TlsSenderCertificateName)",
            stop=False,
        )
    elif days < CERT_WARN_DAYS:
        r.warn("client-cert", text, "renew the client certificate soon")
    else:
        r.ok("client-cert", text)


def _token(r: _Report, step: str, auth: Auth) -> str | None:
    if auth.method == "password":
        return None
    if auth.method == "token":
        return auth.token.get() if auth.token else ""
    start = time.monotonic()
    try:
        token = asyncio.run(token_provider(auth)())
    except ProbeFailure as f:
        r.fail(step, f.message, f.remedy)
    r.ok(
        step,
        f"client {auth.client_id} from {authority_of(auth)} in {time.monotonic() - start:.3f} s",
    )
    return token


def _smtp_auth(r: _Report, smtp: smtplib.SMTP, auth: Auth, token: str | None) -> None:
    offered = (smtp.esmtp_features.get("auth") or "").upper().split()
    want = ["XOAUTH2"] if auth.method != "password" else ["PLAIN", "LOGIN"]
    if not set(want) & set(offered):
        r.fail(
            "smtp-auth",
            f"the relay offers AUTH {' '.join(offered) or 'nothing'}, not {' or '.join(want)}",
            "use the submission port (587) with STARTTLS; on "
            "Microsoft 365 enable SMTP AUTH for the mailbox",
        )
    start = time.monotonic()
    try:
        if auth.method == "password":
            smtp.login(auth.username, auth.password.get() if auth.password else "")
        else:
            blob = f"user={auth.username}\x01auth=Bearer {token}\x01\x01"
            smtp.auth("XOAUTH2", lambda _challenge=None: blob, initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as exc:
        cls = classify_auth_reply(exc.smtp_code, _one_line(exc.smtp_error))
        r.fail(
            "smtp-auth",
            f"{cls.reason.value}: {exc.smtp_code} {_one_line(exc.smtp_error)}",
            cls.remedy,
        )
    r.ok("smtp-auth", f"{auth.method} as {auth.username} in {time.monotonic() - start:.3f} s")


def _check_smtp(r: _Report, target: Target) -> None:
    cfg = target.smtp
    r.heading(
        target, f"target {target.name} ({target.mode}, smtp {cfg.host}:{cfg.port} {cfg.security})"
    )
    _dns(r, cfg.host, cfg.port)
    _tcp(r, cfg.host, cfg.port, cfg.timeout)
    _client_cert(r, target)
    ctx = tls.client_context(
        ca_file=cfg.ca_file,
        client_cert_file=cfg.client_cert_file,
        client_key_file=cfg.client_key_file,
    )
    try:
        if cfg.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=cfg.helo, timeout=cfg.timeout, context=ctx
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, local_hostname=cfg.helo, timeout=cfg.timeout)
    except ssl.SSLError as exc:
        r.fail(
            "tls",
            f"handshake failed ({exc})",
            "set smtp.ca_file to the relay's CA or fix its certificate (name and chain)",
        )
    except (OSError, smtplib.SMTPException) as exc:
        r.fail("banner", f"no SMTP greeting ({exc})", "is this an SMTP port?")
    with smtp:
        smtp.ehlo()
        r.ok("ehlo", _capabilities(smtp))
        if cfg.security == "starttls":
            if not smtp.has_extn("starttls"):
                r.fail("starttls", "not offered", "use a port that offers STARTTLS (587 or 25)")
            try:
                smtp.starttls(context=ctx)
            except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
                r.fail(
                    "tls",
                    f"STARTTLS failed ({exc})",
                    "set smtp.ca_file to the relay's CA or fix its certificate (name and chain)",
                )
            smtp.ehlo()
        if cfg.security != "none":
            _tls(r, smtp.sock, cfg.host)
            r.ok("ehlo-tls", _capabilities(smtp))
        if cfg.auth is None:
            r.skip("smtp-auth", f"mode {target.mode} uses no AUTH")
        else:
            token = _token(r, "smtp-token", cfg.auth)
            _smtp_auth(r, smtp, cfg.auth, token)
        _envelope(r, smtp, target)


def _envelope(r: _Report, smtp: smtplib.SMTP, target: Target) -> None:
    """MAIL FROM + RCPT TO, then RSET: sender rights and connector matching, no mail sent."""
    for command, arg in (("mail", target.mail_from), ("rcpt", target.rcpt_to)):
        code, text = getattr(smtp, command)(arg)
        if code >= 400:
            cls = classify_submit_reply(code, _one_line(text))
            smtp.rset()
            r.fail(
                "envelope",
                f"{command.upper()} {arg}: {cls.reason.value}: {code} {_one_line(text)}",
                cls.remedy,
            )
    smtp.rset()
    r.ok(
        "envelope",
        f"MAIL FROM {target.mail_from} and RCPT TO {target.rcpt_to} accepted "
        "(then RSET: nothing sent)",
    )


def _capabilities(smtp: smtplib.SMTP) -> str:
    f = smtp.esmtp_features
    parts = ["STARTTLS" if "starttls" in f else "no STARTTLS"]
    parts.append(f"AUTH {f['auth'].strip()}" if "auth" in f else "no AUTH")
    if "size" in f:
        parts.append(f"SIZE {f['size'].strip()}")
    return ", ".join(parts)


def _check_graph(r: _Report, target: Target) -> None:
    """mailbox.protocol graph: token, then every folder found and read once (nothing deleted)."""
    from probe.graph.watch import GraphWatch

    cfg = target.mailbox
    r.heading(None, f"  mailbox {cfg.graph_user} over Microsoft Graph {cfg.graph_url}")
    _dns(r, cfg.host, cfg.port)
    _tcp(r, cfg.host, cfg.port, cfg.timeout)
    _token(r, "graph-token", cfg.auth)
    watch = GraphWatch(
        cfg,
        target.junk_folders,
        secret=b"doctor-reads-only",  # verifies no tag: the doctor touches nothing
        instance="relayprobe-doctor",
        stale_after=float("inf"),
        token_provider=token_provider(cfg.auth),
        delete=False,
    )

    async def read() -> None:
        await watch.start()
        await watch.stop()

    start = time.monotonic()
    try:
        asyncio.run(read())
    except ProbeFailure as f:
        r.fail("graph-folders", f.message, f.remedy)
    r.ok("graph-folders", f"{', '.join(watch.folders)} read in {time.monotonic() - start:.3f} s")


def _check_imap(r: _Report, target: Target) -> None:
    cfg = target.mailbox
    if cfg.protocol == "graph":
        return _check_graph(r, target)
    r.heading(None, f"  mailbox {cfg.host}:{cfg.port} {cfg.security} as {cfg.auth.username}")
    _dns(r, cfg.host, cfg.port)
    _tcp(r, cfg.host, cfg.port, cfg.timeout)
    token = _token(r, "imap-token", cfg.auth)
    start = time.monotonic()
    try:
        client = imap.connect(cfg, token=token)
    except ProbeFailure as f:
        fix = f.remedy or (IMAP_OAUTH_REMEDY if cfg.auth.method == "oauth2" else None)
        r.fail("imap-login", f.message, fix or "check mailbox.auth (username and password)")
    try:
        r.ok("imap-login", f"{cfg.auth.method} in {time.monotonic() - start:.3f} s")
        names = [_one_line(name) for _flags, _sep, name in client.list_folders()]
        wanted = [cfg.folder, *target.junk_folders]
        missing = [f for f in wanted if f not in names]
        if missing:
            r.fail(
                "folders",
                f"missing {', '.join(repr(m) for m in missing)}; the mailbox has "
                f"{', '.join(repr(n) for n in names[:12])}",
                "set mailbox.folder and junk_folders to existing names (Exchange's are localised)",
                stop=False,
            )
        else:
            r.ok("folders", ", ".join(repr(w) for w in wanted))
    finally:
        with contextlib.suppress(Exception):  # closing after the checks; nothing left to report
            client.logout()


def run_doctor(
    path: str,
    *,
    targets: list[str] | None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Check every (or the named) target; 0 when all steps pass, 2 when any fails, 3 bad config."""
    if as_json:
        try:
            config = load_config(path)
            selected = [config.target(n) for n in targets] if targets else list(config.targets)
        except ConfigError as exc:
            dump_json({"targets": [], **problems_json(exc.errors, exc.warnings, exc.file)}, out)
            return 3
    else:
        loaded = load_selected(path, targets, err=err)
        if loaded is None:
            return 3
        _config, selected = loaded
    report = _Report(out, as_json)
    for target in selected:
        checks: list[Callable[[_Report, Target], None]] = [_check_smtp, _check_imap]
        for check in checks:
            with contextlib.suppress(_Stop):  # a failed step ends this check, not the run
                check(report, target)
        if not as_json:
            print("", file=out)
    if as_json:
        dump_json({"targets": report.targets, "failed": report.failed}, out)
    else:
        verdict = "all checks passed" if not report.failed else f"{report.failed} check(s) failed"
        print(verdict, file=out)
    return 0 if not report.failed else 2
