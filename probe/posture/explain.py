"""Why a delivered probe failed SPF, DKIM or DMARC: the DNS cause, from the IP and the d=/s= the
receiver saw (docs/architecture.md "Result contract": appended to the failed check's message)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.posture.check import PostureSettings, domain_of, settings_for
from probe.posture.dkim import check_selector
from probe.posture.dmarc import fetch_dmarc
from probe.posture.dns import DnsTrouble, Resolver
from probe.posture.model import Check, State
from probe.posture.spf import fetch_spf, spf_for_ip
from probe.result import CheckResult, HeaderVerdict
from probe.verdict.authresults import MethodResult
from probe.verdict.headers import receiving_block, split_headers

if TYPE_CHECKING:
    from probe.config import Target

log = logging.getLogger("relayprobe.posture")

#: Per lookup, and the budget of one whole explanation (a probe result waits for it).
LOOKUP_TIMEOUT = 2.0
BUDGET = 8.0

_IP_PATTERNS = (
    re.compile(r"sender ip is \[?([0-9a-f.:]+)\]?", re.IGNORECASE),  # Microsoft's spf= comment
    re.compile(r"client-ip=\[?([0-9a-f.:]+)\]?", re.IGNORECASE),  # policyd-spf, Received-SPF
    re.compile(r"smtp\.remote-ip=\[?([0-9a-f.:]+)\]?", re.IGNORECASE),  # RFC 8601 property
)
_HOP_IP = re.compile(r"\[([0-9a-f.:]+)\]", re.IGNORECASE)


# Explanations wait on DNS (up to BUDGET each): their own few threads, so a burst of failing
# verdicts never holds the default executor that mailbox logins and token fetches use.
_EXPLAIN_THREADS = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_EXPLAIN_THREADS, thread_name_prefix="posture-explain")
        return _pool


@dataclass(frozen=True)
class Explanation:
    """The checks with their causes appended, and the remedy lines (empty when nothing failed)."""

    checks: tuple[CheckResult, ...]
    causes: tuple[str, ...] = ()
    remedies: tuple[str, ...] = ()

    @property
    def remedy(self) -> str | None:
        return "; ".join(self.remedies) or None


def _valid_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def sending_ip(raw_headers: bytes | str) -> str | None:
    """The IP the receiver got the probe from: its A-R (``sender IP is``, ``client-ip=``,
    ``smtp.remote-ip=``), else Received-SPF's ``client-ip=``, else the topmost Received hop
    below the receiver's stamps that names a bracketed address."""
    headers = split_headers(raw_headers)
    for wanted in (
        "authentication-results",
        "x-ms-exchange-authentication-results",
        "received-spf",
    ):
        for name, value in headers:
            if name != wanted or (wanted != "received-spf" and "spf=" not in value.lower()):
                continue
            for pattern in _IP_PATTERNS:
                m = pattern.search(value)
                if m and (ip := _valid_ip(m.group(1))):
                    return ip
    seen_ar = False
    for name, value in headers:
        if name == "authentication-results":
            seen_ar = True
        elif name == "received" and seen_ar:
            head = value.split(" by ", 1)[0]
            for m in _HOP_IP.finditer(head):
                if ip := _valid_ip(m.group(1)):
                    return ip
    return None


def _results(raw_headers: bytes | str) -> list[MethodResult]:
    _source, block = receiving_block(split_headers(raw_headers))
    return [r for parsed in block for r in parsed.results]


def _prop(result: MethodResult | None, *keys: str) -> str | None:
    if result is None:
        return None
    for key in keys:
        value = (result.props.get(key) or "").strip().strip(";")
        if value and value.lower() != "none":
            return value
    return None


def _org(domain: str) -> str:
    """Organisational domain (relaxed alignment), by the public suffix list checkdmarc ships."""
    import checkdmarc.utils as cd_utils

    return (cd_utils.get_base_domain(domain) or domain).lower()


def _aligned(a: str | None, b: str, mode: str) -> bool:
    if not a:
        return False
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else _org(a) == _org(b)


def explain(
    raw_headers: bytes | str,
    checks: Sequence[CheckResult],
    verdict: HeaderVerdict,
    *,
    mail_from: str,
    settings: PostureSettings | None = None,
    budget: float = BUDGET,
) -> Explanation:
    """Explain each failed ``spf``/``dkim``/``dmarc`` check from DNS. Never raises: DNS trouble
    (or anything else) becomes "could not look up ..." in the cause."""
    failed = {c.check for c in checks if not c.ok and c.check in ("spf", "dkim", "dmarc")}
    if not failed or verdict.auth.source is None:
        return Explanation(tuple(checks))
    s = settings or PostureSettings()
    resolver = Resolver(s.dns_server, timeout=min(LOOKUP_TIMEOUT, s.timeout))
    resolver.deadline = time.monotonic() + budget
    causes: dict[str, str] = {}
    remedies: list[str] = []
    for method in ("spf", "dkim", "dmarc"):
        if method not in failed:
            continue
        try:
            cause, remedy = _EXPLAIN[method](raw_headers, resolver, mail_from, s)
        except DnsTrouble as trouble:
            cause, remedy = f"could not look up the DNS cause: {trouble}", None
        except Exception as exc:  # an explanation must never turn a result into an error
            log.warning("explaining %s failed: %s", method, exc, exc_info=True)
            cause, remedy = f"could not look up the DNS cause ({type(exc).__name__})", None
        causes[method] = cause
        if remedy:
            remedies.append(remedy)
    out = tuple(
        dataclasses.replace(c, message=f"{c.message}: {causes[c.check]}")
        if c.check in causes and not c.ok
        else c
        for c in checks
    )
    return Explanation(out, tuple(causes.values()), tuple(remedies))


def _check_text(check: Check) -> tuple[str, str | None]:
    if check.state is State.DNS_ERROR:
        return f"could not look up the DNS cause: {check.message}", None
    return check.message, check.remedy


def _explain_spf(
    raw: bytes | str, resolver: Resolver, mail_from: str, s: PostureSettings
) -> tuple[str, str | None]:
    spf = next((r for r in _results(raw) if r.method == "spf"), None)
    sender = _prop(spf, "smtp.mailfrom") or mail_from
    domain = domain_of(sender)
    ip = sending_ip(raw)
    if ip is None:
        rec = fetch_spf(resolver, domain)
        shown = rec.text or "none published"
        return (
            f"SPF failed; the receiver did not name the sending IP; {domain}'s SPF record: {shown}",
            f"make sure {domain}'s SPF record authorises the address the relay sends from",
        )
    text, remedy = _check_text(spf_for_ip(resolver, domain, ip, sender))
    return f"SPF failed: {text}", remedy


def _explain_dkim(
    raw: bytes | str, resolver: Resolver, mail_from: str, s: PostureSettings
) -> tuple[str, str | None]:
    dkims = [r for r in _results(raw) if r.method == "dkim"]
    signed = [(r, _prop(r, "header.d"), _prop(r, "header.s")) for r in dkims]
    signed = [(r, d, sel) for r, d, sel in signed if d and sel]
    if not signed:
        domain = domain_of(mail_from)
        published = [
            check_selector(resolver, domain, sel, tenant=s.tenant) for sel in s.dkim_selectors
        ]
        have = [c.name.split(":", 1)[1] for c in published if c.state is State.OK]
        dns_trouble = [c for c in published if c.state is State.DNS_ERROR]
        if dns_trouble:
            where = f"could not look up the selectors: {dns_trouble[0].message}"
        elif have:
            where = f"selector(s) {', '.join(have)} are published for {domain}"
        else:
            where = f"no selector of {', '.join(s.dkim_selectors)} is published for {domain}"
        return (
            f"DKIM: the message was not signed (dkim={dkims[0].result if dkims else 'none'}); {where}",
            f"enable DKIM signing for {domain} (Microsoft Defender: Email authentication settings, "
            "DKIM) and publish its selector CNAMEs",
        )
    texts, fixes = [], []
    for _r, d, sel in signed:
        check = check_selector(resolver, d, sel, tenant=s.tenant)
        text, fix = _check_text(check)
        if check.state is State.OK:
            text = f"{text} (the key is published: the signature itself did not verify, e.g. the message was changed in transit or the key was rotated)"
        texts.append(f"d={d} s={sel}: {text}")
        if fix:
            fixes.append(fix)
    worst = next((r.result for r, _d, _s in signed if r.result != "pass"), "fail")
    return f"DKIM {worst}: " + "; ".join(texts), "; ".join(fixes) or None


def _explain_dmarc(
    raw: bytes | str, resolver: Resolver, mail_from: str, s: PostureSettings
) -> tuple[str, str | None]:
    results = _results(raw)
    dmarc = next((r for r in results if r.method == "dmarc"), None)
    spf = next((r for r in results if r.method == "spf"), None)
    from_domain = domain_of(_prop(dmarc, "header.from") or mail_from)
    rec = fetch_dmarc(resolver, from_domain)
    if rec.text is None:
        return (
            f"DMARC: {from_domain} publishes no DMARC record",
            f"publish _dmarc.{from_domain} (v=DMARC1; p=quarantine; rua=mailto:...)",
        )
    if rec.error:
        return f"DMARC: {rec.name} is invalid ({rec.error})", "correct the DMARC record's syntax"
    aspf, adkim = str(rec.tag("aspf") or "r"), str(rec.tag("adkim") or "r")
    spf_domain = domain_of(_prop(spf, "smtp.mailfrom") or mail_from)
    spf_ok = spf is not None and spf.result == "pass"
    spf_aligned = _aligned(spf_domain, from_domain, aspf)
    dkim_pass = [_prop(r, "header.d") for r in results if r.method == "dkim" and r.result == "pass"]
    dkim_aligned = [d for d in dkim_pass if _aligned(d, from_domain, adkim)]
    parts = [f"{rec.name} says p={rec.tag('p')}"]
    if not spf_ok:
        parts.append(f"SPF {spf.result if spf else 'missing'} for {spf_domain}")
    elif not spf_aligned:
        parts.append(f"SPF passed for {spf_domain}, not aligned with {from_domain} (aspf={aspf})")
    if not dkim_pass:
        parts.append("no DKIM signature passed")
    elif not dkim_aligned:
        parts.append(
            f"DKIM passed for d={', '.join(d or '?' for d in dkim_pass)}, not aligned with "
            f"{from_domain} (adkim={adkim})"
        )
    return (
        "DMARC: "
        + "; ".join(parts)
        + " (DMARC needs SPF or DKIM to pass aligned with the From domain)",
        f"make SPF (authorise the sending IP in {spf_domain}'s record) or DKIM (sign as "
        f"{from_domain}) pass aligned with {from_domain}",
    )


_EXPLAIN = {"spf": _explain_spf, "dkim": _explain_dkim, "dmarc": _explain_dmarc}


async def explain_failed_auth(
    raw_headers: bytes | str,
    checks: Sequence[CheckResult],
    verdict: HeaderVerdict,
    target: Target,
) -> Explanation:
    """``explain`` for a round trip: in a thread (DNS blocks), with the target's posture DNS
    server; returns at once when no spf/dkim/dmarc check failed, and never raises."""
    wanted = target.posture.explain
    if not wanted or not any(not c.ok and c.check in ("spf", "dkim", "dmarc") for c in checks):
        return Explanation(tuple(checks))
    try:
        call = functools.partial(
            explain,
            raw_headers,
            checks,
            verdict,
            mail_from=target.mail_from,
            settings=settings_for(target),
        )
        return await asyncio.get_running_loop().run_in_executor(_executor(), call)
    except Exception as exc:  # never let the explanation replace the probe's result
        log.warning("explaining the verdict of %s failed: %s", target.name, exc, exc_info=True)
        return Explanation(tuple(checks))
