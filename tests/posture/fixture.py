"""Fixtures: our own dnsmasq (not the testbed's), a silent DNS server, an HTTPS MTA-STS server."""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MS_INCLUDE = "spf.protection.outlook.com"
POLICY = "version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 86400\n"


def _session_ip(salt: int) -> str:
    """A loopback address of this test process alone, so two sessions never share a port."""
    pid = os.getpid()
    return f"127.{150 + salt}.{(pid >> 8) & 255}.{(pid & 255) or 1}"


def dkim_key(bits: int = 2048) -> str:
    """A fresh RSA public key as a DKIM p= value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def txt(name: str, value: str) -> str:
    """A dnsmasq txt-record line; values over 255 bytes split into several strings."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return f"txt-record={name}," + ",".join(f'"{p}"' for p in parts)


def zone(https_ip: str, key: str, short_key: str, *, change_value: str) -> list[str]:
    """Every record the posture tests need (test domains under .test, Microsoft's names under
    .com), served by our dnsmasq only."""
    lines = [
        # Microsoft's include and its tenant's DKIM selector targets (stand-ins: documentation
        # ranges), so an include: of it resolves without the internet.
        txt(MS_INCLUDE, "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip4:52.100.0.0/14 -all"),
        txt("selector1-good-test._domainkey.contoso.onmicrosoft.com", f"v=DKIM1; k=rsa; p={key}"),
        txt("selector2-good-test._domainkey.contoso.onmicrosoft.com", f"v=DKIM1; k=rsa; p={key}"),
        txt("selector1-nodkim-test._domainkey.contoso.onmicrosoft.com", f"v=DKIM1; k=rsa; p={key}"),
        # good.test: everything right
        txt("good.test", f"v=spf1 ip4:192.0.2.10 include:{MS_INCLUDE} -all"),
        "cname=selector1._domainkey.good.test,selector1-good-test._domainkey.contoso.onmicrosoft.com",
        "cname=selector2._domainkey.good.test,selector2-good-test._domainkey.contoso.onmicrosoft.com",
        txt("_dmarc.good.test", "v=DMARC1; p=reject; rua=mailto:dmarc@good.test"),
        "mx-host=good.test,mx.good.test,10",
        "host-record=mx.good.test,192.0.2.25",
        txt("_mta-sts.good.test", "v=STSv1; id=20261208"),
        f"host-record=mta-sts.good.test,{https_ip}",
        txt("_smtp._tls.good.test", "v=TLSRPTv1; rua=mailto:tls@good.test"),
        # noinclude.test: SPF without Microsoft's include; DMARC p=none
        txt("noinclude.test", "v=spf1 include:_spf.mailer.test -all"),
        txt("_spf.mailer.test", "v=spf1 ip4:198.51.100.0/24 -all"),
        txt("_dmarc.noinclude.test", "v=DMARC1; p=none"),
        # eleven.test: Microsoft's include and ten more: eleven lookups
        txt(
            "eleven.test",
            "v=spf1 "
            + " ".join(f"include:l{i}.eleven.test" for i in range(1, 11))
            + f" include:{MS_INCLUDE} -all",
        ),
        *(txt(f"l{i}.eleven.test", f"v=spf1 ip4:198.51.100.{i} -all") for i in range(1, 11)),
        # syntax.test: a misspelt mechanism
        txt("syntax.test", f"v=spf1 ip4:192.0.2.10 includ:{MS_INCLUDE} -all"),
        # nodkim.test: selector1 published, selector2 not; a 1024-bit custom selector
        txt("nodkim.test", f"v=spf1 include:{MS_INCLUDE} -all"),
        "cname=selector1._domainkey.nodkim.test,selector1-nodkim-test._domainkey.contoso.onmicrosoft.com",
        txt("short._domainkey.nodkim.test", f"v=DKIM1; k=rsa; p={short_key}"),
        # change.test: its SPF record is what the "changed record" test sets
        txt("change.test", change_value),
        txt("_dmarc.change.test", "v=DMARC1; p=reject; rua=mailto:d@change.test"),
        # refused.test is outside our local zones: no upstream, so dnsmasq answers REFUSED
    ]
    return lines


@dataclass
class PostureDns:
    """Our dnsmasq: ``server`` (IP:PORT for --dns-server), its data, and ``set_change`` to restart
    it with another SPF value for change.test."""

    ip: str
    port: int
    dir: Path
    https_ip: str
    key: str
    short_key: str
    proc: subprocess.Popen | None = None
    silent: str | None = None  # IP#PORT of a server that never answers: silent.example goes there

    @property
    def server(self) -> str:
        return f"{self.ip}:{self.port}"

    def start(self, change_value: str = f"v=spf1 include:{MS_INCLUDE} -all") -> None:
        self.stop()
        conf = self.dir / "dnsmasq.conf"
        lines = [
            f"listen-address={self.ip}",
            f"port={self.port}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "no-negcache",
            "local=/test/",
            "local=/com/",
            "local=/microsoft/",
            "user=root",
            "group=root",
            f"log-facility={self.dir / 'dnsmasq.log'}",
            "log-queries",
            *zone(self.https_ip, self.key, self.short_key, change_value=change_value),
        ]
        if self.silent:
            # inc.test's SPF record includes a name whose server never answers.
            lines += [
                f"server=/silent.example/{self.silent}",
                txt("inc.test", "v=spf1 include:spf.silent.example -all"),
            ]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", "--pid-file="],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "dnsmasq.err", "w"),  # noqa: SIM115
        )
        _wait_dns(self.ip, self.port, self.proc, self.dir / "dnsmasq.err")

    def set_change(self, value: str) -> None:
        """Restart with change.test's SPF record set to ``value`` (dnsmasq reads txt-record lines
        only at start)."""
        self.start(change_value=value)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _wait_dns(ip: str, port: int, proc: subprocess.Popen, err: Path) -> None:
    """Until dnsmasq answers a query (its UDP socket bound), or fail with its stderr."""
    import dns.message
    import dns.query

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited {proc.returncode}: {err.read_text()}")
        try:
            dns.query.udp(dns.message.make_query("good.test", "TXT"), ip, port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError(f"dnsmasq on {ip}:{port} did not answer within 10 s: {err.read_text()}")


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/.well-known/mta-sts.txt":
            self.send_error(404)
            return
        body = POLICY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def posture_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("posture-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="session")
def mta_sts_server(posture_ca: tuple[trustme.CA, Path]) -> Iterator[str]:
    """HTTPS on <our ip>:443 serving mta-sts.good.test's policy, certificate from our CA."""
    ca, _path = posture_ca
    ip = _session_ip(5)
    server = http.server.ThreadingHTTPServer((ip, 443), _PolicyHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("mta-sts.good.test").configure_cert(ctx)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ip
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def posture_dns(
    tmp_path_factory: pytest.TempPathFactory, mta_sts_server: str
) -> Iterator[PostureDns]:
    """Our own dnsmasq on a loopback address of this session, port 53 (needs root, like the
    testbed; tests/testbed/install.sh installs dnsmasq)."""
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None:
        pytest.fail("the posture tests need root and dnsmasq: run bash tests/testbed/install.sh")
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # reads nothing, answers nothing
    quiet.bind(("127.0.0.1", 0))
    d = PostureDns(
        ip=_session_ip(4),
        port=53,
        dir=tmp_path_factory.mktemp("posture-dns"),
        https_ip=mta_sts_server,
        key=dkim_key(2048),
        short_key=dkim_key(1024),
        silent=f"127.0.0.1#{quiet.getsockname()[1]}",
    )
    d.start()
    yield d
    d.stop()
    quiet.close()


@pytest.fixture
def silent_dns() -> Iterator[str]:
    """A UDP socket that reads queries and never answers: a DNS server that does not answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def swallow() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.recvfrom(4096)
            except OSError:
                continue

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


@pytest.fixture
def misbehaving_dns() -> Iterator[Callable[[str], str]]:
    """A UDP DNS server that answers every query wrongly: ``servfail`` (rcode SERVFAIL) or
    ``lame`` (a referral: NOERROR, no answer, NS records, neither authoritative nor recursive).
    Call it with the kind; it returns IP:PORT."""
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rrset

    servers: list[tuple[socket.socket, threading.Event, threading.Thread]] = []

    def start(kind: str) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(4096)
                except OSError:
                    continue
                query = dns.message.from_wire(data)
                reply = dns.message.make_response(query, recursion_available=False)
                reply.flags &= ~dns.flags.AA
                if kind == "servfail":
                    reply.set_rcode(dns.rcode.SERVFAIL)
                else:
                    zone = query.question[0].name.parent()
                    reply.authority.append(
                        dns.rrset.from_text(zone, 3600, "IN", "NS", "ns1.elsewhere.example.")
                    )
                sock.sendto(reply.to_wire(), peer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        servers.append((sock, stop, thread))
        return f"127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for sock, stop, thread in servers:
        stop.set()
        thread.join()
        sock.close()
