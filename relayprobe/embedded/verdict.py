"""Receiving-side verdict: SPF (pyspf), DKIM (dkimpy), DMARC over an in-memory DNS, as one A-R header."""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

import dkim
import spf

log = logging.getLogger(__name__)

AUTHSERV_ID = "mx.demo.test"


class StaticDns:
    """TXT records served from a dict, so no verifier ever asks a real resolver.

    Keys are lower-case names without the trailing dot; values are the record text (a str).
    The dict is public and mutable: a test may add records for other domains at run time.
    """

    def __init__(self, txt: dict[str, list[str]] | None = None) -> None:
        self.txt: dict[str, list[str]] = dict(txt or {})

    def lookup_txt(self, name: str | bytes) -> list[str]:
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        return self.txt.get(name.rstrip(".").lower(), [])

    def dkim_dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc`` contract: the joined TXT record as bytes, or None."""
        records = self.lookup_txt(name)
        return records[0].encode("ascii") if records else None

    def spf_query_class(self) -> type[spf.query]:
        """A pyspf ``query`` subclass whose DNS is this table (pyspf has no resolver hook)."""
        table = self

        class _Query(spf.query):
            def dns(self, name, qtype, cnames=None, ignore_void=False):  # type: ignore[override]
                if qtype in ("TXT", "SPF"):
                    # pyspf wants each TXT value as a list of byte strings (DNS character-strings)
                    return [[r.encode("ascii")] for r in table.lookup_txt(name)]
                return []  # no A/MX/PTR data: records that need them simply do not match

        return _Query


@dataclass
class Verdict:
    """What the receiving side concluded about one message."""

    spf: str
    spf_domain: str
    spf_ptype: str  # "smtp.mailfrom" or "smtp.helo" (null reverse-path)
    dkim: list[tuple[str, str, str]] = field(default_factory=list)  # (result, d, s)
    dmarc: str = "none"
    dmarc_policy: str | None = None
    header_from: str = ""

    @property
    def junk_by_policy(self) -> bool:
        return self.dmarc == "fail" and self.dmarc_policy in ("quarantine", "reject")

    def header_value(self) -> str:
        """The A-R value in RFC 8601 form: ``mx.demo.test; spf=...; dkim=...; dmarc=...``."""
        parts = [AUTHSERV_ID, f"spf={self.spf} {self.spf_ptype}={self.spf_domain}"]
        for result, d, s in self.dkim or [("none", "", "")]:
            if result == "none":
                parts.append("dkim=none")
                continue
            reason = ' reason="signature verification failed"' if result == "fail" else ""
            parts.append(f"dkim={result}{reason} header.d={d} header.s={s}")
        comment = f" (p={self.dmarc_policy})" if self.dmarc_policy else ""
        parts.append(f"dmarc={self.dmarc}{comment} header.from={self.header_from or 'unknown'}")
        return "; ".join(parts)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower()


def _org_domain(domain: str) -> str:
    # Why not the Public Suffix List: every demo domain is a two-label *.test name, so the last
    # two labels are the organizational domain (RFC 7489 3.2 with a trivial suffix list).
    return ".".join(domain.split(".")[-2:])


def check_spf(dns: StaticDns, client_ip: str, mail_from: str, helo: str) -> tuple[str, str, str]:
    """Returns (result, domain, ptype) via pyspf, against the static DNS."""
    query_class = dns.spf_query_class()
    try:
        result, _code, _text = query_class(i=client_ip, s=mail_from, h=helo).check()
    except Exception as exc:  # pyspf raises on malformed input; RFC 7208 calls that permerror
        log.warning("SPF evaluation failed for %s: %s", mail_from, exc)
        result = "permerror"
    if mail_from:
        return result, _domain_of(mail_from), "smtp.mailfrom"
    return result, helo.lower(), "smtp.helo"


def check_dkim(dns: StaticDns, message: bytes) -> list[tuple[str, str, str]]:
    """One (result, d, s) per DKIM-Signature header, verified with dkimpy."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    sigs = headers.get_all("DKIM-Signature") or []
    results = []
    for idx, sig in enumerate(sigs):
        tags = dict(
            (k.strip(), v.strip())
            for k, _, v in (p.partition("=") for p in "".join(str(sig).split()).split(";"))
            if k.strip()
        )
        try:
            ok = dkim.DKIM(message, minkey=1024).verify(idx=idx, dnsfunc=dns.dkim_dnsfunc)
        except dkim.DKIMException as exc:
            log.info("DKIM signature %d unusable: %s", idx, exc)
            ok = False
        results.append(("pass" if ok else "fail", tags.get("d", ""), tags.get("s", "")))
    return results


def _dmarc_record(dns: StaticDns, domain: str) -> dict[str, str] | None:
    for name in dict.fromkeys((domain, _org_domain(domain))):
        for txt in dns.lookup_txt(f"_dmarc.{name}"):
            if txt.replace(" ", "").lower().startswith("v=dmarc1"):
                tags = (p.partition("=") for p in txt.split(";"))
                record = {k.strip().lower(): v.strip().lower() for k, _, v in tags if k.strip()}
                if name != domain:  # RFC 7489 6.6.3: inherited policy uses sp= when present
                    record["p"] = record.get("sp", record.get("p", "none"))
                return record
    return None


def _aligned(a: str, b: str, mode: str) -> bool:
    return a == b if mode == "s" else _org_domain(a) == _org_domain(b)


def evaluate(
    dns: StaticDns, message: bytes, *, client_ip: str, mail_from: str, helo: str
) -> Verdict:
    """SPF + DKIM + a small DMARC evaluator (RFC 7489 alignment and policy, no reporting)."""
    spf_result, spf_domain, ptype = check_spf(dns, client_ip, mail_from, helo)
    verdict = Verdict(spf_result, spf_domain, ptype, check_dkim(dns, message))
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    froms = email.utils.getaddresses(headers.get_all("From") or [])
    if len(froms) != 1 or "@" not in froms[0][1]:
        verdict.dmarc = "permerror"  # RFC 7489 6.6.1: exactly one author domain is needed
        return verdict
    verdict.header_from = _domain_of(froms[0][1])
    record = _dmarc_record(dns, verdict.header_from)
    if record is None:
        return verdict
    verdict.dmarc_policy = record.get("p", "none")
    spf_ok = spf_result == "pass" and _aligned(
        spf_domain, verdict.header_from, record.get("aspf", "r")
    )
    dkim_ok = any(
        r == "pass" and _aligned(d.lower(), verdict.header_from, record.get("adkim", "r"))
        for r, d, _s in verdict.dkim
    )
    verdict.dmarc = "pass" if spf_ok or dkim_ok else "fail"
    return verdict


SignFunc = Callable[[bytes], bytes]


def dkim_signer(selector: str, domain: str, private_pem: bytes) -> SignFunc:
    """Returns a function that prepends a DKIM-Signature (relaxed/relaxed, rsa-sha256)."""
    signed = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to"]
    signed += [b"mime-version", b"content-type", b"content-transfer-encoding"]

    def sign(message: bytes) -> bytes:
        sig = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=signed,
        )
        return sig + message

    return sign
