"""`relayprobe posture DOMAIN`: SPF, DKIM, DMARC, MX, MTA-STS and TLS-RPT of sending domains."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from probe.config.fields import parse_dns_server
from probe.posture import (
    MODES_NEEDING_INCLUDE,
    SPF_INCLUDE_BY_CLOUD,
    PostureReport,
    PostureSettings,
    PostureState,
    check_domain,
    domain_of,
    settings_for,
)
from probe.posture.dkim import ACS_SELECTORS, M365_SELECTORS
from relayprobe.selection import load_selected

#: Exit code per worst state (docs/architecture.md "Exit codes"): DNS trouble is UNKNOWN (3),
#: below a critical finding and above a warning, like a Nagios plugin's ordering.
EXIT = {
    PostureState.OK: 0,
    PostureState.WARNING: 1,
    PostureState.DNS_ERROR: 3,
    PostureState.CRITICAL: 2,
}


def _from_options(
    *,
    dns_server: str | None,
    selectors: Sequence[str],
    mode: str,
    cloud: str,
    tenant: str | None,
    ca_file: str | None,
    timeout: float,
) -> PostureSettings:
    return PostureSettings(
        dns_server=dns_server,
        timeout=timeout,
        dkim_selectors=tuple(
            dict.fromkeys([*(ACS_SELECTORS if mode == "acs" else M365_SELECTORS), *selectors])
        ),
        required_include=SPF_INCLUDE_BY_CLOUD[cloud] if mode in MODES_NEEDING_INCLUDE else None,
        tenant=tenant,
        ca_file=Path(ca_file) if ca_file else None,
    )


def render(report: PostureReport, out: TextIO) -> None:
    """One header line, then one line per check, state first; the remedy follows on that line."""
    print(f"{report.domain}: {report.state.value.upper()} (DNS {report.dns_server})", file=out)
    for c in report.checks:
        fix = f" -> {c.remedy}" if c.remedy else ""
        print(f"{c.state.value.upper():<9} {c.name:<15} {c.message}{fix}", file=out)


def run_posture(
    domains: Sequence[str],
    *,
    config: str | None = None,
    targets: Sequence[str] | None = None,
    dns_server: str | None = None,
    selectors: Sequence[str] = (),
    ip: str | None = None,
    mode: str = "submission",
    cloud: str = "global",
    tenant: str | None = None,
    ca_file: str | None = None,
    timeout: float = 5.0,
    as_json: bool = False,
    out: TextIO,
    err: TextIO,
) -> int:
    """Check each domain (and each configured target's sending domain); exit per the worst state."""
    if dns_server:
        try:
            parse_dns_server(dns_server)
        except ValueError as exc:
            print(f"relayprobe posture: --dns-server: {exc}", file=err)
            return 3
    if not timeout > 0:
        print(f"relayprobe posture: --timeout must be above 0, not {timeout:g}", file=err)
        return 3
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            print(f"relayprobe posture: --ip: {ip!r} is not an IP address", file=err)
            return 3
    if ca_file and not Path(ca_file).is_file():
        print(f"relayprobe posture: --ca-file: {ca_file}: no such file", file=err)
        return 3
    plan: dict[str, PostureSettings] = {}
    if config:
        loaded = load_selected(config, targets, err=err)
        if loaded is None:
            return 3
        for target in loaded[1]:
            s = settings_for(target)
            if dns_server:
                s = dataclasses.replace(s, dns_server=dns_server)
            if selectors:
                s = dataclasses.replace(s, dkim_selectors=(*s.dkim_selectors, *selectors))
            plan.setdefault(domain_of(target.mail_from), s)
    for d in domains:
        plan[d.lower().rstrip(".")] = _from_options(
            dns_server=dns_server,
            selectors=selectors,
            mode=mode,
            cloud=cloud,
            tenant=tenant,
            ca_file=ca_file,
            timeout=timeout,
        )
    if not plan:
        print("relayprobe posture: name a DOMAIN or --config FILE", file=err)
        return 3
    reports = [check_domain(domain, s, ip=ip) for domain, s in plan.items()]
    worst = max((r.state for r in reports), key=lambda s: s.severity)
    if as_json:
        doc = {"state": worst.value, "reports": [r.to_dict() for r in reports]}
        print(json.dumps(doc, indent=2), file=out)
    else:
        for i, report in enumerate(reports):
            if i:
                print(file=out)
            render(report, out)
    return EXIT[worst]
