"""SPF: the record, its syntax and lookup count (checkdmarc), Microsoft's include, and the verdict
for one sending IP (pyspf), all asked of one DNS server."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import checkdmarc.spf as cd_spf
import checkdmarc.utils as cd_utils
import dns.exception
import spf as pyspf

from probe.posture.dns import Answer, DnsTrouble, Resolver, trouble_check
from probe.posture.model import Check, State

#: RFC 7208 section 4.6.4: more than ten DNS-querying terms is a permerror at every receiver.
MAX_LOOKUPS = 10

# checkdmarc keeps one process-wide DNS cache keyed by name only (not by server) for 30 min:
# two servers, or a record that changed, would see stale answers. Every use is serialised and
# starts with an empty cache (posture runs are rare; docs/architecture.md "Decisions").
_CHECKDMARC = threading.Lock()


@contextmanager
def checkdmarc_session(timeout: float) -> Iterator[None]:
    """Hold checkdmarc for one domain's checks, its cache emptied; DnsTrouble if it is busy."""
    if not _CHECKDMARC.acquire(timeout=timeout):
        raise DnsTrouble(
            "busy", "-", "-", "-", f"other posture checks held the record parser for {timeout:g} s"
        )
    try:
        cd_utils.DNS_CACHE.clear()
        yield
    finally:
        cd_utils.DNS_CACHE.clear()
        _CHECKDMARC.release()


def spf_records(answer: Answer) -> list[str]:
    """The ``v=spf1`` TXT records of a lookup (RFC 7208 4.5: exactly that version section)."""
    return [r for r in answer.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


@dataclass(frozen=True)
class SpfRecord:
    """The domain's SPF record as found: text (None when absent) and why it is absent."""

    domain: str
    text: str | None
    problem: str | None = None  # "nxdomain", "none" or "multiple"


def fetch_spf(resolver: Resolver, domain: str) -> SpfRecord:
    """The SPF record of ``domain``; DnsTrouble when the server could not answer."""
    answer = resolver.lookup(domain, "TXT")
    if answer.status == "nxdomain":
        return SpfRecord(domain, None, "nxdomain")
    found = spf_records(answer)
    if len(found) > 1:
        return SpfRecord(domain, " | ".join(found), "multiple")
    return SpfRecord(domain, found[0] if found else None, None if found else "none")


def _includes(parsed: dict[str, Any]) -> Iterator[str]:
    """Every include target in a checkdmarc parse tree, nested ones too (and redirects)."""
    for mech in parsed.get("mechanisms", []):
        if mech.get("mechanism") == "include":
            yield str(mech.get("value", "")).lower()
            yield from _includes(mech.get("parsed") or {})
    redirect = parsed.get("redirect")
    if isinstance(redirect, dict):
        yield str(redirect.get("domain", "")).lower()
        yield from _includes(redirect.get("parsed") or {})


def check_spf(
    resolver: Resolver,
    domain: str,
    *,
    required_include: str | None = None,
    ip: str | None = None,
    sender: str | None = None,
) -> list[Check]:
    """The SPF checks of ``domain``: ``spf`` (record and syntax), ``spf_lookups``,
    ``spf_include`` (when ``required_include``) and ``spf_ip`` (when ``ip``)."""
    try:
        rec = fetch_spf(resolver, domain)
    except DnsTrouble as trouble:
        return [trouble_check("spf", trouble, record="spf")]
    if rec.text is None or rec.problem == "multiple":
        return [_absent(rec)] + ([spf_for_ip(resolver, domain, ip, sender)] if ip else [])
    out: list[Check] = []
    try:
        with checkdmarc_session(resolver.timeout * 4):
            parsed = cd_spf.parse_spf_record(
                rec.text,
                domain,
                ignore_too_many_lookups=True,
                resolver=resolver.dnspython,
                timeout=resolver.timeout,
                retries=0,
            )
    except DnsTrouble as trouble:
        return [trouble_check("spf", trouble, record="spf", value=rec.text)]
    except (dns.exception.DNSException, OSError) as exc:
        trouble = DnsTrouble(
            "error", domain, "TXT", resolver.server, str(exc) or type(exc).__name__
        )
        return [trouble_check("spf", trouble, record="spf", value=rec.text)]
    except cd_spf.SPFError as exc:
        text = str(exc)
        if _is_dns_timeout(text):
            # An include's or a: / mx: term's lookup failed: nothing known about the record.
            trouble = DnsTrouble("timeout", domain, "TXT", resolver.server)
            check = trouble_check("spf", trouble, record="spf", value=rec.text)
            where = f"following {domain}'s SPF record ({rec.text}) via {resolver.server}: {text}"
            return [dataclasses.replace(check, message=f"DNS trouble, nothing known: {where}")]
        out.append(
            Check(
                "spf",
                State.CRITICAL,
                f"{domain}'s SPF record is invalid (every receiver returns permerror): {text}",
                "correct the SPF record's syntax (RFC 7208); until then SPF fails for every sender",
                record="spf",
                value=rec.text,
            )
        )
        if ip:
            out.append(spf_for_ip(resolver, domain, ip, sender))
        return out
    lookups = int(parsed.get("dns_lookups", 0))
    warnings = list(parsed.get("warnings", []))
    out.append(
        Check(
            "spf",
            State.OK,
            f"{domain}: {rec.text}" + (f" ({len(warnings)} note(s))" if warnings else ""),
            record="spf",
            value=rec.text,
            details={"warnings": warnings, "all": parsed.get("parsed", {}).get("all")},
        )
    )
    if lookups > MAX_LOOKUPS:
        out.append(
            Check(
                "spf_lookups",
                State.CRITICAL,
                f"{domain}'s SPF record needs {lookups} DNS lookups, over the limit of "
                f"{MAX_LOOKUPS} (receivers return permerror)",
                "flatten or remove include:, a, mx, ptr and exists: terms until at most 10 "
                "lookups remain (RFC 7208 4.6.4)",
                details={"lookups": lookups},
            )
        )
    else:
        out.append(
            Check(
                "spf_lookups",
                State.OK,
                f"{lookups} of at most {MAX_LOOKUPS} DNS lookups",
                details={"lookups": lookups},
            )
        )
    if required_include:
        # checkdmarc stops following includes at the lookup limit: the record's own terms count too.
        direct = {
            t.split(":", 1)[1].lower()
            for t in rec.text.split()
            if t.lower().startswith(("include:", "+include:"))
        }
        included = set(_includes(parsed.get("parsed", {}))) | direct
        if required_include.lower() in included:
            out.append(Check("spf_include", State.OK, f"include:{required_include} is there"))
        else:
            out.append(
                Check(
                    "spf_include",
                    State.CRITICAL,
                    f"{domain}'s SPF record lacks include:{required_include}: mail Microsoft 365 "
                    "sends for it fails SPF",
                    f"add include:{required_include} to {domain}'s SPF record "
                    f"(e.g. v=spf1 include:{required_include} -all; docs/configuration.md#posture)",
                    details={"includes": sorted(included)},
                )
            )
    if ip:
        out.append(spf_for_ip(resolver, domain, ip, sender))
    return out


def _is_dns_timeout(text: str) -> bool:
    low = text.lower()
    return "timed out" in low or "timeout" in low or "servfail" in low or "no nameservers" in low


def _absent(rec: SpfRecord) -> Check:
    if rec.problem == "multiple":
        return Check(
            "spf",
            State.CRITICAL,
            f"{rec.domain} has more than one SPF record (receivers return permerror): {rec.text}",
            "merge them into one v=spf1 TXT record (RFC 7208 4.5)",
            record="spf",
            value=rec.text,
        )
    why = (
        "the domain does not exist (NXDOMAIN)"
        if rec.problem == "nxdomain"
        else "no v=spf1 TXT record"
    )
    return Check(
        "spf",
        State.CRITICAL,
        f"{rec.domain} publishes no SPF record: {why}",
        f"publish a TXT record at {rec.domain} that authorises the senders "
        "(docs/configuration.md#posture)",
        record="spf",
        value=None,
    )


class _Query(pyspf.query):  # type: ignore[misc]
    """pyspf's evaluation with its DNS asked of our resolver (pyspf has no resolver hook; it
    would use dnspython's process-wide default resolver)."""

    resolver: Resolver

    def dns(self, name: str, qtype: str, cnames: Any = None, ignore_void: bool = False) -> list:
        name = str(name).rstrip(".")
        try:
            answer = self.resolver.lookup(name, qtype)
        except DnsTrouble as trouble:
            raise pyspf.TempError(f"DNS {trouble}") from None
        result: list = []
        for value in answer.records:
            if qtype in ("TXT", "SPF"):
                result.append([value.encode("utf-8")])  # pyspf joins a TXT's strings itself
            elif qtype == "MX":
                pref, _, host = value.partition(" ")
                result.append((int(pref), host))
            else:
                result.append(value)
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > pyspf.MAX_VOID_LOOKUPS:
                raise pyspf.PermError(f"Void lookup limit of {pyspf.MAX_VOID_LOOKUPS} exceeded")
        return result


@dataclass(frozen=True)
class SpfVerdict:
    """pyspf's result for one IP: ``result`` (pass, fail, softfail, neutral, none, permerror,
    temperror) and its explanation."""

    result: str
    explanation: str


def evaluate(resolver: Resolver, ip: str, sender: str, helo: str = "") -> SpfVerdict:
    """The SPF result for mail from ``sender`` (an address or a domain) delivered from ``ip``."""
    if "@" not in sender:
        sender = f"postmaster@{sender}"
    ipaddress.ip_address(ip)  # ValueError for a bad IP, before pyspf's own odd messages
    query = _Query(i=ip, s=sender, h=helo or sender.partition("@")[2], timeout=resolver.timeout)
    query.resolver = resolver
    result, _code, explanation = query.check()
    return SpfVerdict(str(result).lower(), str(explanation))


def spf_for_ip(resolver: Resolver, domain: str, ip: str, sender: str | None = None) -> Check:
    """The ``spf_ip`` check: does ``domain``'s SPF record authorise ``ip``?"""
    try:
        verdict = evaluate(resolver, ip, sender or domain)
    except ValueError:
        return Check(
            "spf_ip", State.CRITICAL, f"{ip!r} is not an IP address", "give an IPv4 or IPv6 address"
        )
    try:
        rec = fetch_spf(resolver, domain)
        record = rec.text
    except DnsTrouble:
        record = None
    shown = f"{domain}'s SPF record ({record})" if record else f"{domain}'s SPF record"
    state, message, remedy = {
        "pass": (State.OK, f"{ip} is authorised by {shown}", None),
        "fail": (
            State.CRITICAL,
            f"{ip} is not authorised by {shown}",
            f"add {ip} (ip4:/ip6:) or the include of the service that sends from it to {domain}'s "
            "SPF record",
        ),
        "softfail": (
            State.WARNING,
            f"{ip} is not authorised by {shown} (softfail: ~all)",
            f"add {ip} or its service's include to {domain}'s SPF record",
        ),
        "neutral": (
            State.WARNING,
            f"{shown} says nothing about {ip} (neutral)",
            f"authorise {ip} explicitly in {domain}'s SPF record",
        ),
        "none": (
            State.CRITICAL,
            f"{domain} publishes no SPF record, so {ip} is not authorised",
            f"publish an SPF record at {domain} that authorises {ip}",
        ),
        "permerror": (
            State.CRITICAL,
            f"{shown} is broken (permerror: {verdict.explanation}), so no IP is authorised",
            f"fix {domain}'s SPF record (syntax, at most 10 lookups, one record)",
        ),
    }.get(
        verdict.result,
        (
            State.DNS_ERROR,
            f"could not evaluate {shown} for {ip}: {verdict.result} ({verdict.explanation})",
            "a DNS problem, not a posture failure; the next run tries again",
        ),
    )
    return Check(
        "spf_ip",
        state,
        message,
        remedy,
        details={"ip": ip, "result": verdict.result, "explanation": verdict.explanation},
    )
