"""MX, MTA-STS (the DNS record and the policy file over verified HTTPS) and TLS-RPT of a domain."""

from __future__ import annotations

import fnmatch
import http.client
import socket
import ssl
from pathlib import Path

import checkdmarc.mta_sts as cd_sts
import checkdmarc.smtp_tls_reporting as cd_tlsrpt

from probe.posture.dns import DnsTrouble, Resolver, trouble_check
from probe.posture.model import Check, State
from probe.tls import client_context

#: RFC 8461 3.3: the policy lives at this path on mta-sts.<domain>, port 443, HTTPS only.
POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.3: a policy is small; refuse to read a huge body


def mx_hosts(resolver: Resolver, domain: str) -> list[tuple[int, str]]:
    answer = resolver.lookup(domain, "MX")
    out = []
    for value in answer.records:
        pref, _, host = value.partition(" ")
        out.append((int(pref), host.lower().rstrip(".")))
    return sorted(out)


def check_mx(resolver: Resolver, domain: str) -> tuple[Check, list[str]]:
    """The ``mx`` check and the MX host names (for the MTA-STS policy's mx: lines)."""
    try:
        hosts = mx_hosts(resolver, domain)
    except DnsTrouble as trouble:
        return trouble_check("mx", trouble, record="mx"), []
    value = ", ".join(f"{p} {h}" for p, h in hosts) or None
    if not hosts:
        return (
            Check(
                "mx",
                State.WARNING,
                f"{domain} has no MX record: bounces, replies and reports to it are not delivered",
                f"publish {domain}'s MX (Microsoft 365: <domain-with-dashes>.mail.protection.outlook.com)",
                record="mx",
            ),
            [],
        )
    return Check("mx", State.OK, value or "", record="mx", value=value), [h for _p, h in hosts]


def fetch_policy(
    resolver: Resolver, domain: str, *, ca_file: Path | None = None, timeout: float = 10.0
) -> str:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt, the host resolved through
    ``resolver`` and the certificate verified (``ca_file`` replaces the system store, for tests).

    Raises DnsTrouble for DNS, OSError/ssl.SSLError for the connection, ValueError for a reply
    that is not a policy (status, content type, size)."""
    host = f"mta-sts.{domain}"
    answer = resolver.lookup(host, "A")
    if not answer.records:
        answer = resolver.lookup(host, "AAAA")
    if not answer.records:
        raise ValueError(f"{host} has no address ({answer.status})")
    ctx = client_context(ca_file=ca_file)
    conn = _PinnedHttps(host, answer.records[0], ctx, timeout)
    try:
        conn.request("GET", POLICY_PATH, headers={"User-Agent": "relayprobe"})
        resp = conn.getresponse()
        body = resp.read(MAX_POLICY_BYTES + 1)
    finally:
        conn.close()
    url = f"https://{host}{POLICY_PATH}"
    if resp.status != 200:  # RFC 8461 3.3: redirects are not followed
        raise ValueError(f"{url} answered HTTP {resp.status} {resp.reason}")
    ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "text/plain":
        raise ValueError(f"{url} has Content-Type {ctype or 'none'}, not text/plain")
    if len(body) > MAX_POLICY_BYTES:
        raise ValueError(f"{url} is larger than {MAX_POLICY_BYTES} bytes")
    return body.decode("utf-8", "replace")


class _PinnedHttps(http.client.HTTPSConnection):
    """HTTPS to an address resolved through our resolver, with SNI and certificate checks for
    the host name (the system resolver is never asked)."""

    def __init__(self, host: str, ip: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, 443, context=context, timeout=timeout)
        self._ip = ip
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


def check_mta_sts(
    resolver: Resolver,
    domain: str,
    mx: list[str],
    *,
    ca_file: Path | None = None,
) -> list[Check]:
    """``mta_sts`` (the _mta-sts TXT record) and, when one is published, ``mta_sts_policy``."""
    name = f"_mta-sts.{domain}"
    try:
        answer = resolver.lookup(name, "TXT")
    except DnsTrouble as trouble:
        return [trouble_check("mta_sts", trouble, record="mta_sts")]
    found = [r for r in answer.records if r.lower().startswith("v=stsv1")]
    if not found:
        return [Check("mta_sts", State.OK, f"not published at {name} (optional)", record="mta_sts")]
    text = found[0]
    try:
        cd_sts.parse_mta_sts_record(text)
    except cd_sts.MTASTSError as exc:
        return [
            Check(
                "mta_sts",
                State.WARNING,
                f"{name}: invalid record ({exc}): {text}",
                "correct the record: v=STSv1; id=<a new id whenever the policy changes>",
                record="mta_sts",
                value=text,
            )
        ]
    out = [Check("mta_sts", State.OK, f"{name}: {text}", record="mta_sts", value=text)]
    url = f"https://mta-sts.{domain}{POLICY_PATH}"
    try:
        policy_text = fetch_policy(resolver, domain, ca_file=ca_file, timeout=resolver.timeout * 2)
    except DnsTrouble as trouble:
        out.append(trouble_check("mta_sts_policy", trouble, record="mta_sts_policy"))
        return out
    except (OSError, ssl.SSLError, ValueError, http.client.HTTPException) as exc:
        out.append(
            Check(
                "mta_sts_policy",
                State.WARNING,
                f"{url}: the policy cannot be fetched: {exc}",
                "serve the policy over HTTPS with a certificate valid for mta-sts.<domain> "
                "(senders that find the TXT record but no policy fall back to opportunistic TLS)",
                # No record value: an unreachable server says nothing about the policy's content,
                # so the daemon keeps the last one (not a change).
                record=None,
            )
        )
        return out
    try:
        parsed = cd_sts.parse_mta_sts_policy(policy_text)["policy"]
    except cd_sts.MTASTSError as exc:
        out.append(
            Check(
                "mta_sts_policy",
                State.WARNING,
                f"{url}: invalid policy ({exc})",
                "correct the policy (RFC 8461 3.2: version, mode, mx, max_age)",
                record="mta_sts_policy",
                value=policy_text.strip(),
            )
        )
        return out
    patterns = [str(p).lower() for p in parsed.get("mx", [])]
    uncovered = [h for h in mx if not any(fnmatch.fnmatch(h, p) for p in patterns)]
    mode = parsed.get("mode")
    state, notes = State.OK, []
    if uncovered:
        state = State.WARNING
        notes.append(f"MX {', '.join(uncovered)} not covered by its mx: lines")
    if mode == "testing":
        notes.append("mode testing (reports only)")
    msg = f"mode {mode}, mx {', '.join(patterns) or '-'}, max_age {parsed.get('max_age')}"
    out.append(
        Check(
            "mta_sts_policy",
            state,
            msg + (f"; {'; '.join(notes)}" if notes else ""),
            "list every MX host in the policy's mx: lines (and change the record's id=)"
            if uncovered
            else None,
            record="mta_sts_policy",
            value=policy_text.strip(),
            details={"policy": parsed},
        )
    )
    return out


def check_tls_rpt(resolver: Resolver, domain: str, *, sts_published: bool) -> Check:
    """``tls_rpt`` (_smtp._tls TXT): optional, but expected next to an MTA-STS policy."""
    name = f"_smtp._tls.{domain}"
    try:
        answer = resolver.lookup(name, "TXT")
    except DnsTrouble as trouble:
        return trouble_check("tls_rpt", trouble, record="tls_rpt")
    found = [r for r in answer.records if r.lower().startswith("v=tlsrptv1")]
    if not found:
        if sts_published:
            return Check(
                "tls_rpt",
                State.WARNING,
                f"MTA-STS is published but {name} has no TLS-RPT record: nobody hears of TLS failures",
                f"publish {name} TXT v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
                record="tls_rpt",
            )
        return Check("tls_rpt", State.OK, f"not published at {name} (optional)", record="tls_rpt")
    text = found[0]
    try:
        cd_tlsrpt.parse_smtp_tls_reporting_record(text)
    except cd_tlsrpt.SMTPTLSReportingError as exc:
        return Check(
            "tls_rpt",
            State.WARNING,
            f"{name}: invalid record ({exc}): {text}",
            "correct it: v=TLSRPTv1; rua=mailto:<address>",
            record="tls_rpt",
            value=text,
        )
    return Check("tls_rpt", State.OK, f"{name}: {text}", record="tls_rpt", value=text)
