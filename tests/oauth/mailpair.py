"""A separate small Dovecot + Postfix pair for XOAUTH2 and connector tests, on its own loopback ports.

Dovecot validates the stand-in authority's JWTs with its oauth2 passdb (local validation); Postfix
submission hands SASL to that Dovecot; a connector listener requires and checks client certificates.
Started and stopped by pid (instance-scoped commands), never touching the shared testbed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

TEMPLATES = Path(__file__).resolve().parent / "templates"
HOST = "127.0.0.1"
PORTS = {
    "SUBMISSION_PORT": 20587,
    "IMAPS_PORT": 20993,
    "LMTP_PORT": 20024,
    "CONNECTOR_PORT": 20025,
    "DIRECT_PORT": 20026,
}
REJECT_DIRECT_SEND = (
    "/@oauth\\.test$/ 550 5.7.68 TenantInboundAttribution; Direct Send not allowed for this "
    "organization from unauthorized sources\n"
)
DOMAIN = "oauth.test"
MAILBOXES = ("sender@oauth.test", "inbox@oauth.test", "other@oauth.test")


@dataclass
class MailPair:
    """A built (and after ``start()`` running) Dovecot + Postfix stand-in under ``state``."""

    state: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.state / "tls" / "ca.crt"

    @property
    def submission_port(self) -> int:
        return PORTS["SUBMISSION_PORT"]

    @property
    def imaps_port(self) -> int:
        return PORTS["IMAPS_PORT"]

    @property
    def connector_port(self) -> int:
        return PORTS["CONNECTOR_PORT"]

    @property
    def direct_port(self) -> int:
        return PORTS["DIRECT_PORT"]

    def reject_direct_send(self, on: bool) -> None:
        """Like Set-OrganizationConfig -RejectDirectSend: refuse anonymous mail from oauth.test."""
        if getattr(self, "_rejecting", False) == on:
            return
        self._rejecting = on
        (self.state / "postfix/direct_send.pcre").write_text(
            REJECT_DIRECT_SEND if on else "# RejectDirectSend off\n"
        )
        # pcre tables are read when smtpd starts: reload this instance (instance-scoped command).
        subprocess.run(
            ["postfix", "-c", str(self.state / "postfix"), "reload"],
            check=True,
            capture_output=True,
        )
        time.sleep(0.5)  # old smtpd processes finish; new connections see the new table

    def imap_unavailable(self, on: bool) -> None:
        """IMAP XOAUTH2/OAUTHBEARER logins of every mailbox answer ``NO [UNAVAILABLE] Temporary
        authentication failure. [<host>:<time>]`` (SMTP AUTH is unaffected)."""
        # Dovecot cannot expand the field, so the deny passdb's lookup fails internally
        # (tests/oauth/README.md#fault-switches); the name says why in dovecot.log.
        if getattr(self, "_unavailable", False) == on:
            return  # reset() calls this around every test: no needless 1 s wait
        self._unavailable = on
        field = "unavailable=%{relayprobe_switch_imap_unavailable}"
        lines = [f"imap/{m}:{':' * 6}{field}\n" for m in MAILBOXES] if on else []
        _write_passwd_switch(self.state / "dovecot/imap-unavailable.passwd", "".join(lines))

    def restart_auth(self) -> None:
        """A fresh Dovecot auth process: it caches validation keys for its whole life (no TTL,
        and ``doveadm auth cache flush`` does not touch them), so a removed key file alone does
        not refuse old tokens (tests/oauth/README.md#fault-switches)."""
        old = _auth_pids(self.state / "run/dovecot/master.pid")
        # Not `doveadm reload`: the old auth process keeps serving Postfix's open connection
        # until the master SIGTERMs it ~6 s later. The master starts a new one on demand.
        for pid in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in old):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot auth processes {old} did not exit")
            time.sleep(0.02)

    def client_cert(self, name: str) -> tuple[Path, Path]:
        """(cert, key) files of the connector client certificate ``name`` (see build)."""
        return self.state / "tls" / f"{name}.crt", self.state / "tls" / f"{name}.key"

    # --- build -----------------------------------------------------------------------------
    def build(self, authority_key_writer) -> None:
        s = self.state
        for sub in (
            "tls",
            "postfix",
            "spool",
            "lib/postfix",
            "lib/dovecot",
            "dovecot/keys",
            "run/dovecot",
            "log",
            "mail",
        ):
            (s / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(s, 0o755)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost", "smtp.oauth.test", "mx.oauth.test")
        server.private_key_pem.write_to_path(str(s / "tls/server.key"))
        server.cert_chain_pems[0].write_to_path(str(s / "tls/server.crt"))
        os.chmod(s / "tls/server.key", 0o600)
        # Connector certificates: "connector" is registered, "stranger" (same CA) is not.
        fingerprints = []
        for name in ("connector", "stranger"):
            leaf = self.ca.issue_cert(f"{name}.{DOMAIN}")
            leaf.private_key_pem.write_to_path(str(s / f"tls/{name}.key"))
            leaf.cert_chain_pems[0].write_to_path(str(s / f"tls/{name}.crt"))
            if name == "connector":
                fingerprints.append(_fingerprint(leaf.cert_chain_pems[0].bytes()))
        mail = pwd.getpwnam("mail")
        values = {"S": str(s), "MAIL_UID": str(mail.pw_uid), "MAIL_GID": str(mail.pw_gid)}
        values |= {k: str(v) for k, v in PORTS.items()}
        for name, dst in (
            ("dovecot.conf", "dovecot/dovecot.conf"),
            ("main.cf", "postfix/main.cf"),
            ("master.cf", "postfix/master.cf"),
            ("dovecot-oauth2.conf.ext", "dovecot/dovecot-oauth2.conf.ext"),
        ):
            text = (TEMPLATES / name).read_text()
            for key, value in values.items():
                text = text.replace("{{" + key + "}}", value)
            (s / dst).write_text(text)
        (s / "dovecot/empty.passwd").write_text("")
        os.chmod(s / "dovecot/empty.passwd", 0o644)
        (s / "dovecot/imap-unavailable.passwd").write_text("")  # imap_unavailable(False)
        os.chmod(s / "dovecot/imap-unavailable.passwd", 0o644)
        authority_key_writer(s / "dovecot/keys")
        (s / "postfix/mailboxes").write_text("".join(f"{m} OK\n" for m in MAILBOXES))
        (s / "postfix/sender_login.pcre").write_text("/^(.*)$/ ${1}\n")
        (s / "postfix/connector_certs").write_text(
            "".join(f"{fp} connector.{DOMAIN}\n" for fp in fingerprints)
        )
        (s / "postfix/connector_reject.pcre").write_text(
            "/./ 550 5.7.64 TenantAttribution; Relay Access Denied\n"
        )
        (s / "postfix/direct_send.pcre").write_text("# RejectDirectSend off\n")
        (s / "postfix/not_authenticated.pcre").write_text(
            "/./ 530 5.7.57 Client not authenticated to send mail\n"
        )
        for path in (s / "mail",):
            os.chown(path, mail.pw_uid, mail.pw_gid)
            os.chmod(path, 0o750)
        postfix = pwd.getpwnam("postfix")
        os.chown(s / "lib/postfix", postfix.pw_uid, postfix.pw_gid)
        os.chmod(s / "lib/postfix", 0o700)

    # --- run -------------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        for port in PORTS.values():
            if _port_open(port):
                raise RuntimeError(
                    f"127.0.0.1:{port} is already in use; is another OAuth "
                    "stand-in running? (tests/oauth/mailpair.py)"
                )
        log = open(self.state / "log/start.log", "ab")  # noqa: SIM115 - daemons keep it
        with log:
            for cmd in (
                ["dovecot", "-c", str(self.state / "dovecot/dovecot.conf")],
                ["postfix", "-c", str(self.state / "postfix"), "start"],
            ):
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                if proc.returncode != 0:
                    self.stop()
                    raise RuntimeError(
                        f"{cmd[0]} failed to start (exit {proc.returncode}); "
                        f"see {self.state}/log/start.log"
                    )
        deadline = time.monotonic() + timeout
        for port in PORTS.values():
            while not _port_open(port):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"port {port} did not open; see {self.state}/log")
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop this instance's daemons by their pid files (SIGTERM, then SIGKILL)."""
        for pid_file in (
            self.state / "spool/pid/master.pid",
            self.state / "run/dovecot/master.pid",
        ):
            _stop_pid(pid_file)

    def log_text(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted((self.state / "log").glob("*.log"))
        )


_generation = [0]


def _write_passwd_switch(path: Path, text: str) -> None:
    """Write a passwd-file Dovecot re-reads, and return once the very next login sees it."""
    path.write_text(text)
    path.chmod(0o644)
    # Dovecot re-reads a passwd-file when mtime or size differ, checking at most once per
    # second of its clock: a unique mtime per write, then wait for the next second boundary.
    _generation[0] += 1
    stamp = 1_000_000_000 + _generation[0]
    os.utime(path, (stamp, stamp))
    time.sleep(1.02 - time.time() % 1)


def _auth_pids(master_pid_file: Path) -> list[int]:
    """Dovecot's auth processes (children of the master named "auth")."""
    try:
        master = int(master_pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    out = []
    for pid in _children(master):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "auth":
                out.append(pid)
        except OSError:
            continue
    return out


def _fingerprint(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _stop_pid(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if not _alive(pid):
        return
    victims, todo = [], [pid]
    while todo:  # the daemon and all its children (login processes, smtpd, ...)
        p = todo.pop()
        victims.append(p)
        todo.extend(_children(p))
    for sig, wait in ((15, 2.0), (9, 3.0)):
        for p in victims:
            if _alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
        deadline = time.monotonic() + wait
        while any(_alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
