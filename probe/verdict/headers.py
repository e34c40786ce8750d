"""Read the receiver's verdict from a header block: auth, Microsoft spam stamps, hops, arrival."""

from __future__ import annotations

import datetime as dt
import re
from email.utils import parsedate_to_datetime

from probe.result import AuthVerdict, HeaderVerdict, Hop, SpamVerdict
from probe.verdict.authresults import (
    AuthResults,
    MethodResult,
    clean_value,
    parse_authentication_results,
)

AR = "authentication-results"
XMS_AR = "x-ms-exchange-authentication-results"
_CANONICAL = {AR: "Authentication-Results", XMS_AR: "X-MS-Exchange-Authentication-Results"}
ORG_SCL = "x-ms-exchange-organization-scl"
FOREFRONT = "x-forefront-antispam-report"
ANTISPAM = "x-microsoft-antispam"
MAILBOX_DELIVERY = "x-microsoft-antispam-mailbox-delivery"
ARRIVAL = "x-ms-exchange-crosstenant-originalarrivaltime"

#: Headers whose presence means "this is a header block we can say something about".
RECOGNISED = frozenset(
    {AR, XMS_AR, ORG_SCL, FOREFRONT, ANTISPAM, MAILBOX_DELIVERY, ARRIVAL, "received"}
)

_NAME_RE = re.compile(r"^([!-9;-~]+)[ \t]*:(.*)$")  # printable ASCII except ':' and space
_MS_HOST_RE = re.compile(r"\.(outlook\.com|office365\.com|outlook\.cn)\.?$", re.IGNORECASE)
_ARRIVAL_RE = re.compile(
    r"(\d{1,2})\s+([A-Za-z]{3})[a-z]*\s+(\d{4})\s+(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

Headers = list[tuple[str, str]]  # (lower-cased name, unfolded and decoded value), top to bottom


def header_block(raw: bytes) -> bytes:
    """Return the header part of a full message: everything before the first empty line."""
    match = re.search(rb"(\r?\n)\r?\n", raw)
    return raw if match is None else raw[: match.end(1)]


def split_headers(raw: bytes | str) -> Headers:
    """Split a header block (CRLF or LF) into unfolded, RFC 2047-decoded (name, value) pairs.

    Lines that are not headers (an mbox ``From `` line, a ``# comment``) are skipped; the block
    ends at the first empty line.
    """
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    out: list[list[str]] = []
    for line in re.split(r"\r\n|\n|\r", text):
        if not line.strip():
            if out:
                break
            continue
        if line[0] in " \t":
            if out:
                out[-1][1] += " " + line.strip()
            continue
        match = _NAME_RE.match(line)
        if match:
            out.append([match.group(1).lower(), match.group(2)])
        else:
            out.append(["", ""])  # not a header: also stops a stray continuation joining on
    return [(name, clean_value(value)) for name, value in out if name]


def parse_headers(raw: bytes | str, *, authserv_id: str | None = None) -> HeaderVerdict:
    """Parse a received header block (or a whole message: it stops at the body) into a verdict.

    ``authserv_id`` pins the Authentication-Results to one RFC 8601 receiver (operator setting);
    otherwise the topmost receiving block counts (see ``receiving_block``). Microsoft's spam and
    arrival stamps count only where Microsoft wrote them for this copy (see ``spam_verdict``);
    ``arrived_at`` is the receiving tenant's OriginalArrivalTime, else the topmost Received date.
    """
    headers = split_headers(raw)
    received = [value for name, value in headers if name == "received"]
    ms_receiver = not received or _is_microsoft_hop(received[0])
    ms_path = ms_receiver or any(_is_microsoft_hop(r) for r in received)
    hops = parse_hops(received)
    arrived = _arrival(headers) if ms_receiver else None
    if arrived is None and hops:
        arrived = hops[-1].at
    return HeaderVerdict(
        auth=auth_verdict(headers, authserv_id=authserv_id, ms_receiver=ms_receiver),
        spam=spam_verdict(headers, ms_receiver=ms_receiver, ms_path=ms_path),
        hops=hops,
        arrived_at=arrived,
    )


def _is_microsoft_hop(received: str) -> bool:
    """True when a Received header was written by Exchange Online or Exchange (EOP, mailbox)."""
    by = _received_part(received, "by")
    return bool(by and _MS_HOST_RE.search(by)) or "Microsoft SMTP Server" in received


def receiving_block(
    headers: Headers, authserv_id: str | None = None, *, ms_receiver: bool = True
) -> tuple[str | None, list[AuthResults]]:
    """Pick the receiver's Authentication-Results: (canonical header name, parsed values).

    Topmost AR, plus the ARs below it from the same authserv-id (Postfix + OpenDKIM + OpenDMARC +
    policyd-spf write one header each; OpenDKIM's may sit above the receiver's own Received and the
    others below it). The run ends at an AR from another authserv-id or at the second Received
    below the first AR, so an earlier pass through the same host is not merged in. An AR a sender
    forged with the receiver's id directly below the receiver's stamps would still be merged:
    RFC 8601 section 5 makes the receiver delete those. Microsoft's form (no authserv-id) is one
    header per tenant, so only the topmost counts and a sending tenant's AR is never merged.
    With ``authserv_id`` set, only ARs carrying that id count and there is no fallback.
    Without any AR, the topmost X-MS-Exchange-Authentication-Results (connector relay) is used.
    Microsoft's forms count only when ``ms_receiver`` (the topmost hop is Microsoft's): below
    another receiver that wrote no AR of its own they are a sending or forwarding tenant's verdict,
    not this copy's, and everything further down is older still, so the answer is "unknown".
    """
    want = authserv_id.lower() if authserv_id else None
    block: list[AuthResults] = []
    block_id: str | None = None
    crossed = 0
    for name, value in headers:
        if block and name == "received":
            crossed += 1
            if crossed >= 2:
                break
        if name != AR:
            continue
        parsed = parse_authentication_results(value)
        pid = parsed.authserv_id.lower() if parsed.authserv_id else None
        if not block:
            if want is not None and pid != want:
                continue
            if pid is None and not ms_receiver:
                return None, []
            block, block_id = [parsed], pid
            if pid is None:
                break
        elif pid == block_id:
            block.append(parsed)
        else:
            break
    if block:
        return _CANONICAL[AR], block
    if want is None and ms_receiver:
        for name, value in headers:
            if name == XMS_AR:
                return _CANONICAL[XMS_AR], [parse_authentication_results(value)]
    return None, []


def auth_verdict(
    headers: Headers, *, authserv_id: str | None = None, ms_receiver: bool = True
) -> AuthVerdict:
    """Reduce the receiving block to one result per method.

    spf, dmarc, compauth: the first result of that method. dkim: one result per signature is
    normal (Microsoft lists each; protonmail writes two verifiers' views), so ``dkim`` is "pass"
    when any signature passed, as DMARC itself counts it, else the first result; ``dkim_all`` keeps
    every result in order so a broken second signature stays visible.
    """
    source, block = receiving_block(headers, authserv_id, ms_receiver=ms_receiver)
    results = [r for parsed in block for r in parsed.results]

    def first(method: str) -> MethodResult | None:
        return next((r for r in results if r.method == method), None)

    spf, dmarc, compauth = first("spf"), first("dmarc"), first("compauth")
    action = dmarc.props.get("action", "").lower() if dmarc else ""
    dkim_all = [r.result for r in results if r.method == "dkim"]
    dkim = "pass" if "pass" in dkim_all else (dkim_all[0] if dkim_all else None)
    return AuthVerdict(
        spf=spf.result if spf else None,
        dkim=dkim,
        dmarc=dmarc.result if dmarc else None,
        dmarc_action=action or None,
        compauth=compauth.result if compauth else None,
        compauth_reason=compauth.reason if compauth else None,
        source=source if block else None,
        dkim_all=dkim_all,
    )


def _fields(value: str | None) -> dict[str, str]:
    """Split `K:v;K:v` (Forefront / Antispam / Mailbox-Delivery), keys lower-cased, first wins."""
    out: dict[str, str] = {}
    for part in (value or "").replace("(null)", "").split(";"):  # MHA-known `(null)` artefacts
        key, sep, val = part.partition(":")
        if sep and key.strip():
            out.setdefault(key.strip().lower(), val.strip())
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def spam_verdict(headers: Headers, *, ms_receiver: bool, ms_path: bool) -> SpamVerdict:
    """Microsoft's spam stamps, trusted only where Microsoft wrote them for this copy.

    X-MS-Exchange-Organization-* (SCL) and the Mailbox-Delivery folder decision are read only when
    the topmost Received hop is Microsoft's: Exchange strips foreign organization headers at its
    boundary, any other receiver does not, so there they are a sending tenant's leftovers or
    forgeries. X-Forefront-Antispam-Report / X-Microsoft-Antispam (topmost) are also read when the
    message passed a Microsoft hop on the way (then they are the sending tenant's outbound
    verdict, DIR:OUT); with no Microsoft hop at all they can only be forged and are ignored.
    """

    def top(name: str) -> str | None:
        return next((v for n, v in headers if n == name), None)

    spam = SpamVerdict()
    if ms_path:
        forefront = _fields(top(FOREFRONT))
        spam.scl = _int(forefront.get("scl"))
        spam.sfv = forefront.get("sfv", "").upper() or None
        spam.cat = forefront.get("cat", "").upper() or None
        spam.bcl = _int(_fields(top(ANTISPAM)).get("bcl"))
    if ms_receiver:
        org_scl = _int(top(ORG_SCL))
        if org_scl is not None:
            spam.scl = (
                org_scl  # the SCL Exchange used for delivery (Microsoft's MHA reads this too)
            )
        spam.dest = _fields(top(MAILBOX_DELIVERY)).get("dest", "").upper() or None
    return spam


def _received_part(value: str, word: str) -> str | None:
    """The host after `from`/`by` in a Received value, comments removed."""
    head = value.rsplit(";", 1)[0] if ";" in value else value
    prev = None
    while prev != head:  # strip nested comments from the inside out
        prev, head = head, re.sub(r"\([^()]*\)", " ", head)
    match = re.search(rf"(?:^|\s){word}\s+([^\s;]+)", head, re.IGNORECASE)
    return match.group(1) if match else None


def _received_date(value: str) -> dt.datetime | None:
    if ";" not in value:
        return None
    text = " ".join(value.rsplit(";", 1)[1].split())
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)  # "-0000": UTC, zone unknown


def parse_hops(received: list[str]) -> list[Hop]:
    """Received headers (top = newest) as hops oldest -> newest, with seconds since the hop before.

    A negative delay is kept as measured: it shows clock skew between the two servers.
    """
    hops: list[Hop] = []
    for value in reversed(received):
        at = _received_date(value)
        prev = hops[-1].at if hops else None
        delay = (at - prev).total_seconds() if at is not None and prev is not None else None
        hops.append(
            Hop(
                by=_received_part(value, "by"),
                from_=_received_part(value, "from"),
                at=at,
                delay_seconds=delay,
            )
        )
    return hops


def parse_arrival_time(value: str) -> dt.datetime | None:
    """Parse `01 Apr 2026 14:05:51.2293 (UTC)` (always UTC, 4-digit fraction), aware."""
    match = _ARRIVAL_RE.search(value)
    if not match:
        return None
    day, mon, year, hh, mm, ss, frac = match.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        return dt.datetime(int(year), month, int(day), int(hh), int(mm), int(ss), micro, dt.UTC)
    except ValueError:
        return None


def _arrival(headers: Headers) -> dt.datetime | None:
    value = next((v for n, v in headers if n == ARRIVAL), None)
    return parse_arrival_time(value) if value else None
