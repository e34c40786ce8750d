"""A domain's whole posture (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT) and its settings per target."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from probe.posture.dkim import ACS_SELECTORS, M365_SELECTORS, check_dkim
from probe.posture.dmarc import check_dmarc
from probe.posture.dns import DEFAULT_TIMEOUT, Resolver
from probe.posture.model import PostureReport
from probe.posture.spf import check_spf
from probe.posture.transport import check_mta_sts, check_mx, check_tls_rpt

if TYPE_CHECKING:
    from probe.config import Target

#: Microsoft's SPF include per cloud (docs/configuration.md#posture): the US government clouds
#: and 21Vianet send from their own ranges.
SPF_INCLUDE_BY_CLOUD = {
    "global": "spf.protection.outlook.com",
    "gcc": "spf.protection.outlook.com",
    "gcc_high": "spf.protection.office365.us",
    "dod": "spf.protection.office365.us",
    "china": "spf.protection.partner.outlook.cn",
}
#: Modes whose mail leaves from Microsoft's servers, so the domain's SPF must include Microsoft's:
#: submission, connector (relayed on to the internet by Exchange Online), hve and acs (ACS asks
#: for the same include). direct_send comes from the device's own IP, which the SPF record must
#: name itself (the explanation of a failing probe checks exactly that IP).
MODES_NEEDING_INCLUDE = frozenset({"submission", "connector", "hve", "acs"})


@dataclass(frozen=True)
class PostureSettings:
    """What to check for one domain, from a target's ``posture`` block or the command line."""

    dns_server: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    dkim_selectors: tuple[str, ...] = M365_SELECTORS
    required_include: str | None = None
    tenant: str | None = None
    ca_file: Path | None = None
    interval: float = 3600.0


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def settings_for(target: Target) -> PostureSettings:
    """A target's posture settings, the mode's defaults filled in."""
    p = target.posture
    if p.dkim_selectors is not None:
        selectors = tuple(p.dkim_selectors)
    else:
        selectors = ACS_SELECTORS if target.mode == "acs" else M365_SELECTORS
    need = p.require_microsoft_include
    if need is None:
        need = target.mode in MODES_NEEDING_INCLUDE
    tenant = p.tenant
    auth = target.smtp.auth
    if tenant is None and auth is not None and (auth.tenant_id or "").endswith(".onmicrosoft.com"):
        tenant = auth.tenant_id  # a tenant written as its initial domain names it
    return PostureSettings(
        dns_server=p.dns_server,
        timeout=p.timeout,
        dkim_selectors=selectors,
        required_include=SPF_INCLUDE_BY_CLOUD[target.cloud] if need else None,
        tenant=tenant,
        ca_file=p.ca_file,
        interval=p.interval,
    )


def check_domain(
    domain: str,
    settings: PostureSettings | None = None,
    *,
    ip: str | None = None,
    now: dt.datetime | None = None,
) -> PostureReport:
    """Every posture check of ``domain``; never raises for DNS trouble (those checks say
    ``dns_error``). ``ip``: also evaluate SPF for mail delivered from that address."""
    s = settings or PostureSettings()
    domain = domain.lower().rstrip(".")
    resolver = Resolver(s.dns_server, timeout=s.timeout)
    checks = check_spf(resolver, domain, required_include=s.required_include, ip=ip)
    checks += check_dkim(resolver, domain, list(s.dkim_selectors), tenant=s.tenant)
    checks += check_dmarc(resolver, domain)
    mx_check, mx = check_mx(resolver, domain)
    checks.append(mx_check)
    sts = check_mta_sts(resolver, domain, mx, ca_file=s.ca_file)
    checks += sts
    published = any(c.name == "mta_sts" and c.value for c in sts)
    checks.append(check_tls_rpt(resolver, domain, sts_published=published))
    return PostureReport(
        domain=domain,
        dns_server=resolver.server,
        checked_at=now or dt.datetime.now(dt.UTC),
        checks=tuple(checks),
    )
