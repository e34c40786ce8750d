"""DKIM selectors: the key record (dkimpy parses it), its size, and where Microsoft 365's selector
CNAMEs point (docs/configuration.md#posture)."""

from __future__ import annotations

import base64
import binascii
import re

import dkim.util
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from probe.posture.dns import DnsTrouble, Resolver, trouble_check
from probe.posture.model import Check, State

#: Microsoft 365 signs with one of these two selectors and rotates between them.
M365_SELECTORS = ("selector1", "selector2")
#: Azure Communication Services' pair for a custom domain, CNAMEs to azurecomm.net
#: (docs/configuration.md#posture).
ACS_SELECTORS = ("selector1-azurecomm-prod-net", "selector2-azurecomm-prod-net")

# Where Microsoft 365's selector CNAMEs point: the older form
# selector1-contoso-com._domainkey.contoso.onmicrosoft.com and, for domains added since May 2025,
# selector1-contoso-com._domainkey.contoso.n-v1.dkim.mail.microsoft (docs/configuration.md#posture).
_M365_TARGET = re.compile(
    r"^(?P<sel>selector[12])-(?P<dom>[a-z0-9-]+)\._domainkey\.(?P<tenant>[a-z0-9-]+)"
    r"\.(?:onmicrosoft\.com|[a-z0-9]-v[12]\.dkim\.mail\.microsoft)$"
)
_ACS_TARGET = re.compile(r"^(?P<sel>selector[12]-azurecomm-prod-net)\._domainkey\.azurecomm\.net$")


def dkim_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def key_bits(tags: dict[bytes, bytes]) -> tuple[str, int | None]:
    """(key type, size in bits) of a DKIM key record's ``k=``/``p=``; size None if unreadable."""
    ktype = tags.get(b"k", b"rsa").decode("ascii", "replace").strip().lower()
    try:
        der = base64.b64decode(re.sub(rb"\s+", b"", tags.get(b"p", b"")), validate=True)
        if ktype == "ed25519":
            ed25519.Ed25519PublicKey.from_public_bytes(der)
            return ktype, 256
        key = load_der_public_key(der)
    except (ValueError, binascii.Error, TypeError):
        return ktype, None
    return ktype, key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def check_selector(
    resolver: Resolver,
    domain: str,
    selector: str,
    *,
    tenant: str | None = None,
) -> Check:
    """The ``dkim:<selector>`` check: key published, its size, and for Microsoft 365's selectors
    whether the CNAME points at Microsoft (at ``tenant``'s initial domain when given)."""
    name, check = dkim_name(selector, domain), f"dkim:{selector}"
    record = check
    try:
        txt = resolver.lookup(name, "TXT")
        cname = txt.cname
        if cname is None and txt.status != "ok":
            cname_ans = resolver.cname(name)  # a dangling CNAME: where it points is the clue
            cname = cname_ans.records[0] if cname_ans.records else None
    except DnsTrouble as trouble:
        return trouble_check(check, trouble, record=record)
    keys = [r for r in txt.records if "p=" in r]
    shown = f"{name} -> {cname}" if cname else name
    value = f"CNAME {cname}" if cname else (keys[0] if keys else None)
    details: dict[str, object] = {"name": name, "cname": cname}
    m365, acs = selector in M365_SELECTORS, selector in ACS_SELECTORS
    if not keys:
        where = (
            f"{name} points at {cname}, which has no key"
            if cname
            else f"no DKIM key at {name} ({'NXDOMAIN' if txt.status == 'nxdomain' else 'no TXT record'})"
        )
        fix = (
            "enable DKIM signing for the domain in Microsoft Defender (Email authentication "
            f"settings) and publish {selector}._domainkey as the CNAME it shows"
            if m365
            else "publish the DKIM CNAMEs the Azure portal shows for the domain (Email "
            "Communication Services, Provision domains)"
            if acs
            else f"publish the {selector} selector's public key at {name}"
        )
        return Check(check, State.CRITICAL, where, fix, record=record, value=value, details=details)
    tags = dkim.util.parse_tag_value(keys[0].encode("utf-8"))
    ktype, bits = key_bits(tags)
    details |= {"key_type": ktype, "bits": bits}
    if not tags.get(b"p", b"").strip():
        return Check(
            check,
            State.CRITICAL,
            f"{shown}: the key is revoked (empty p=)",
            f"sign with another selector, or publish a key at {name}",
            record=record,
            value=value,
            details=details,
        )
    if bits is None:
        return Check(
            check,
            State.CRITICAL,
            f"{shown}: the p= key cannot be read ({ktype})",
            f"publish a valid base64 public key at {name}",
            record=record,
            value=value,
            details=details,
        )
    state, notes, fix = State.OK, [], []
    if ktype == "rsa" and bits < 1024:
        state = State.CRITICAL
        notes.append("too short: receivers ignore keys under 1024 bits")
        fix.append("rotate to a 2048-bit key")
    elif ktype == "rsa" and bits < 2048:
        state = State.WARNING
        notes.append("2048 bits recommended")
        fix.append("rotate to a 2048-bit key (Microsoft Defender: Rotate DKIM keys)")
    if m365:
        target = (cname or "").lower()
        match = _M365_TARGET.match(target)
        details["tenant"] = match["tenant"] if match else None
        want = (tenant or "").lower().split(".")[0] or None
        if cname is None:
            state = max(state, State.WARNING, key=lambda s: s.severity)
            notes.append("published as a TXT record, not as a CNAME to Microsoft 365")
            fix.append(
                f"point {name} at Microsoft 365 with the CNAME Defender shows, so key rotation follows"
            )
        elif match is None:
            state = max(state, State.WARNING, key=lambda s: s.severity)
            notes.append(f"the CNAME points at {cname}, not at a Microsoft 365 tenant")
            fix.append("use the CNAME value Microsoft Defender shows for the domain")
        elif want and match["tenant"] != want:
            state = max(state, State.WARNING, key=lambda s: s.severity)
            notes.append(f"the CNAME points at tenant {match['tenant']}, not {want}")
            fix.append(f"point it at {want}'s selector (Defender shows the value)")
    if acs and not _ACS_TARGET.match((cname or "").lower()):
        state = max(state, State.WARNING, key=lambda s: s.severity)
        notes.append("not a CNAME to azurecomm.net")
        fix.append(f"point {name} at {selector}._domainkey.azurecomm.net")
    msg = f"{shown}: {bits}-bit {ktype} key" + (f"; {'; '.join(notes)}" if notes else "")
    return Check(
        check, state, msg, "; ".join(fix) or None, record=record, value=value, details=details
    )


def check_dkim(
    resolver: Resolver, domain: str, selectors: list[str], *, tenant: str | None = None
) -> list[Check]:
    """One ``dkim:<selector>`` check per selector, in the given order (duplicates once)."""
    return [check_selector(resolver, domain, s, tenant=tenant) for s in dict.fromkeys(selectors)]
