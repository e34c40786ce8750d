"""Builds a fresh state dir: throw-away CA and server cert, DKIM key, rendered daemon configs."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from . import config, switches

SAN = "DNS:localhost,DNS:mx.probe.test,DNS:smtp.probe.test,DNS:imap.probe.test,IP:127.0.0.1,IP:127.0.0.3"


def config_hash(extras: list[Path]) -> str:
    """Hash of everything a running testbed was built from; a change means rebuild."""
    digest = hashlib.sha256()
    roots = [config.TEMPLATES, config.HELPERS, Path(__file__).parent]
    files = sorted(
        p for root in roots for p in root.rglob("*") if p.is_file() and ".pyc" not in p.name
    )
    for path in [*files, *extras]:
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _openssl(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["openssl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _wait(proc: subprocess.Popen[bytes], what: str) -> bytes:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"openssl ({what}) failed: {err.decode(errors='replace').strip()}")
    return out


def _tls_reusable(tls: Path) -> bool:
    """A CA kept from the previous run stays valid: long-running clients keep trusting it."""
    crt = tls / "server.crt"
    if not all((tls / n).exists() for n in ("ca.crt", "server.crt", "server.key")):
        return False
    check = ["openssl", "x509", "-checkend", "86400", "-noout", "-in", str(crt)]
    return subprocess.run(check, capture_output=True).returncode == 0


def make_tls(tls: Path) -> None:
    """Throw-away CA + server cert (EC P-256: instant), unless a valid pair was kept."""
    if _tls_reusable(tls):
        return
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca_ext = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    ca = ["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30"]
    ca += ["-subj", "/CN=relayprobe testbed CA", *(a for e in ca_ext for a in ("-addext", e))]
    _wait(_openssl(*ca, cwd=tls), "CA")
    csr = ["req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr"]
    _wait(_openssl(*csr, "-subj", "/CN=mx.probe.test", cwd=tls), "server key")
    (tls / "server.ext").write_text(
        f"subjectAltName={SAN}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"]
    sign += ["-CAcreateserial", "-days", "30", "-out", "server.crt", "-extfile", "server.ext"]
    _wait(_openssl(*sign, cwd=tls), "server cert")
    for name in ("ca.key", "server.key"):
        os.chmod(tls / name, 0o600)


def make_keys(state: Path) -> str:
    """TLS material and a new 2048-bit DKIM key; returns the DKIM TXT value for dnsmasq."""
    dkim = state / "dkim"
    # RSA keygen is the slow part: run it while the certificates are made.
    rsa = ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "tb.private"]
    dkim_proc = _openssl(*rsa, cwd=dkim)
    make_tls(state / "tls")
    _wait(dkim_proc, "DKIM key")
    pub = ["pkey", "-in", "tb.private", "-pubout", "-outform", "DER"]
    der = _wait(_openssl(*pub, cwd=dkim), "DKIM pub")
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    # A TXT character-string holds at most 255 bytes (tests/testbed/README.md#dkim-txt-strings).
    parts = [record[i : i + 250] for i in range(0, len(record), 250)]
    (dkim / "tb.txt").write_text(record + "\n")
    return ",".join(f'"{p}"' for p in parts)


def dkim_dns_data(dnsmasq_conf: Path) -> str:
    """The `_domainkey` TXT records dnsmasq serves, as OpenDKIM TestDNSData ("name value")."""
    lines = []
    for line in dnsmasq_conf.read_text().splitlines():
        match = re.match(r"txt-record=([^,]+\._domainkey\.[^,]+),(.*)$", line.strip())
        if match:
            value = "".join(re.findall(r'"([^"]*)"', match.group(2)))
            lines.append(f"{match.group(1).lower()} {value}\n")
    return "".join(lines)


def _render(src: Path, dst: Path, values: dict[str, str]) -> None:
    text = src.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)


def _chown(path: Path, user: str, mode: int) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)


def build(state: Path, dns_extra: list[Path], dovecot_include: list[Path]) -> None:
    """Create every file the daemons need under the (empty) state dir."""
    for sub in (
        "tls",
        "dkim",
        "dns",
        "postfix",
        "spool",
        "lib/postfix",
        "lib/dovecot",
        "dovecot/sieve",
        "dovecot/local.d",
        "milters",
        "mail",
        "run/dovecot",
        "run/opendmarc",
        "log",
        "bin",
    ):
        (state / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)
    # Marker first: a half-built dir must still be recognised (and wiped) by the next start.
    (state / config.MARKER).write_text("relayprobe testbed state dir; `tb stop --purge` wipes it\n")
    mail = pwd.getpwnam("mail")
    values = {"S": str(state), "MAIL_UID": str(mail.pw_uid), "MAIL_GID": str(mail.pw_gid)}
    values["DKIM_TXT"] = make_keys(state)

    t = config.TEMPLATES
    for name in ("main.cf", "master.cf", "static_faults.pcre", "sender_login.pcre"):
        _render(t / "postfix" / name, state / "postfix" / name, values)
    _render(t / "dovecot/dovecot.conf", state / "dovecot/dovecot.conf", values)
    _render(t / "dovecot/junk.sieve", state / "dovecot/sieve/junk.sieve", values)
    includes = sorted((t / "dovecot/local.d").glob("*.conf")) + dovecot_include
    for i, src in enumerate(includes):
        _render(src, state / "dovecot/local.d" / f"{i:02d}-{src.name}", values)
    for src in (t / "milters").iterdir():
        _render(src, state / "milters" / src.name, values)
    for name in ("dnsmasq.conf", "unbound.conf"):
        _render(t / "dns" / name, state / "dns" / name, values)
    with (state / "dns/dnsmasq.conf").open("a") as out:
        for extra in dns_extra:
            out.write(f"\n# extra records from {extra}\n{extra.read_text()}\n")
    (state / "dkim/dns-data").write_text(dkim_dns_data(state / "dns/dnsmasq.conf"))
    (state / "dns/resolv.conf").write_text(f"nameserver {config.DNS_HOST}\noptions timeout:2\n")
    for src in config.HELPERS.glob("*.py"):
        shutil.copy(src, state / "bin" / src.name)
        os.chmod(state / "bin" / src.name, 0o755)

    accounts = {**config.USERS, **config.tenant_users()}
    (state / "postfix/mailboxes").write_text("".join(f"{u} OK\n" for u in accounts))
    home = state / "mail" / config.DOMAIN
    (state / "dovecot/users.passwd").write_text(
        "".join(
            f"{u}:{{PLAIN}}{p}:{mail.pw_uid}:{mail.pw_gid}::{home / u.split('@')[0]}::\n"
            for u, p in accounts.items()
        )
    )
    # Dovecot's auth process reads it as the dovecot user.
    os.chown(state / "dovecot/users.passwd", 0, pwd.getpwnam("dovecot").pw_gid)
    os.chmod(state / "dovecot/users.passwd", 0o640)
    switches.write_tables(state, switches.empty())

    home.mkdir(parents=True, exist_ok=True)
    for path in (state / "mail", home):
        _chown(path, "mail", 0o750)
    _chown(state / "dkim/tb.private", "opendkim", 0o600)
    # tests/testbed/README.md#opendmarc-pid-directory
    _chown(state / "run/opendmarc", "opendmarc", 0o755)
    _chown(state / "lib/postfix", "postfix", 0o700)
    subprocess.run(
        [
            "sievec",
            "-c",
            str(state / "dovecot/dovecot.conf"),
            str(state / "dovecot/sieve/junk.sieve"),
        ],
        check=True,
        capture_output=True,
    )
    (state / "tb.env").write_text("\n".join(config.env_lines(state)) + "\n")
