"""DMARC: the policy record (checkdmarc parses it), its policy, pct/testing, alignment and reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import checkdmarc.dmarc as cd_dmarc
import checkdmarc.utils as cd_utils
import dns.exception

from probe.posture.dns import DnsTrouble, Resolver, trouble_check
from probe.posture.model import Check, State
from probe.posture.spf import checkdmarc_session


@dataclass(frozen=True)
class DmarcRecord:
    """The DMARC record that governs ``domain``: where it was found and its parsed tags."""

    domain: str
    name: str | None  # _dmarc.<domain> or _dmarc.<organisational domain>; None when absent
    text: str | None
    tags: dict[str, Any]
    warnings: tuple[str, ...] = ()
    error: str | None = None  # checkdmarc's syntax error
    absent: str = ""  # how _dmarc.<domain> answered when there is no record: NXDOMAIN or no TXT

    def tag(self, key: str) -> Any:
        return (self.tags.get(key) or {}).get("value")

    def explicit(self, key: str) -> bool:
        return bool((self.tags.get(key) or {}).get("explicit"))


def _dmarc_txt(resolver: Resolver, name: str) -> tuple[list[str], str]:
    answer = resolver.lookup(name, "TXT")
    absent = "NXDOMAIN" if answer.status == "nxdomain" else "no v=DMARC1 TXT record"
    return [r for r in answer.records if r.lower().startswith("v=dmarc1")], absent


def fetch_dmarc(resolver: Resolver, domain: str) -> DmarcRecord:
    """The DMARC record of ``domain``, falling back to its organisational domain (RFC 7489 6.6.3);
    DnsTrouble when the server could not answer."""
    domain = domain.lower().rstrip(".")
    names = [f"_dmarc.{domain}"]
    base = cd_utils.get_base_domain(domain)
    if base and base != domain:
        names.append(f"_dmarc.{base}")
    absent = ""
    for name in names:
        found, why = _dmarc_txt(resolver, name)
        absent = absent or why
        if not found:
            continue
        text = found[0]
        if len(found) > 1:
            return DmarcRecord(
                domain, name, " | ".join(found), {}, error="more than one DMARC record"
            )
        try:
            with checkdmarc_session(resolver.timeout * 4):
                parsed = cd_dmarc.parse_dmarc_record(
                    text,
                    name.removeprefix("_dmarc."),
                    resolver=resolver.dnspython,
                    timeout=resolver.timeout,
                    retries=0,
                )
        except cd_dmarc.DMARCError as exc:
            return DmarcRecord(domain, name, text, {}, error=str(exc))
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTrouble("error", name, "TXT", resolver.server, str(exc)) from None
        return DmarcRecord(domain, name, text, parsed["tags"], tuple(parsed.get("warnings", [])))
    return DmarcRecord(domain, None, None, {}, absent=absent)


def check_dmarc(resolver: Resolver, domain: str) -> list[Check]:
    """The ``dmarc`` check (record and policy) and ``dmarc_reports`` (rua/ruf)."""
    try:
        rec = fetch_dmarc(resolver, domain)
    except DnsTrouble as trouble:
        return [trouble_check("dmarc", trouble, record="dmarc")]
    if rec.text is None:
        return [
            Check(
                "dmarc",
                State.CRITICAL,
                f"{domain} publishes no DMARC record (_dmarc.{domain}: {rec.absent})",
                f"publish a TXT record at _dmarc.{domain}, e.g. v=DMARC1; p=quarantine; "
                f"rua=mailto:dmarc-reports@{domain} (Outlook.com junks bulk mail without one)",
                record="dmarc",
            )
        ]
    if rec.error:
        return [
            Check(
                "dmarc",
                State.CRITICAL,
                f"{rec.name}: invalid DMARC record ({rec.error}): {rec.text}",
                "correct the DMARC record's syntax (receivers ignore an invalid one)",
                record="dmarc",
                value=rec.text,
            )
        ]
    policy, pct, testing = rec.tag("p"), rec.tag("pct"), rec.tag("t")
    adkim, aspf = rec.tag("adkim"), rec.tag("aspf")
    details = {
        "name": rec.name,
        "p": policy,
        "sp": rec.tag("sp"),
        "pct": pct,
        "t": testing,
        "adkim": adkim,
        "aspf": aspf,
        "warnings": list(rec.warnings),
    }
    where = "" if rec.name == f"_dmarc.{domain}" else f" (from {rec.name})"
    state, notes, fix = State.OK, [], []
    if policy == "none":
        state = State.WARNING
        notes.append("monitoring only: receivers deliver mail that fails DMARC")
        fix.append("move to p=quarantine or p=reject once the reports show every sender aligned")
    if rec.explicit("pct") and str(pct) != "100":
        state = State.WARNING
        notes.append(f"pct={pct}: the policy applies to part of the failing mail only")
        fix.append("set pct=100 (or drop it)")
    if rec.explicit("t") and str(testing).lower() == "y":
        state = State.WARNING
        notes.append("t=y: testing mode")
        fix.append("drop t=y to enforce the policy")
    align = f"adkim={adkim} aspf={aspf}"
    msg = f"p={policy}{where}; {align}" + (f"; {'; '.join(notes)}" if notes else "")
    out = [
        Check(
            "dmarc",
            state,
            msg,
            "; ".join(fix) or None,
            record="dmarc",
            value=rec.text,
            details=details,
        )
    ]
    rua = [_uri(u) for u in rec.tag("rua") or []]
    ruf = [_uri(u) for u in rec.tag("ruf") or []]
    if rua:
        text = "rua " + ", ".join(rua) + (f"; ruf {', '.join(ruf)}" if ruf else "")
        out.append(Check("dmarc_reports", State.OK, text, details={"rua": rua, "ruf": ruf}))
    else:
        out.append(
            Check(
                "dmarc_reports",
                State.WARNING,
                f"no rua= in {rec.name}: nobody receives aggregate reports of who sends as {domain}",
                f"add rua=mailto:<a mailbox you read>@{domain} to the DMARC record",
                details={"rua": [], "ruf": ruf},
            )
        )
    return out


def _uri(uri: Any) -> str:
    if isinstance(uri, dict):
        return f"{uri.get('scheme', 'mailto')}:{uri.get('address', '')}"
    return str(uri)
