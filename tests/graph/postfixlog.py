"""Message-trace records built from Postfix's real log of a message (the Graph stand-in's trace)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field

# "Dec 08 00:09:52 smtp postfix/lmtp[4888]: 29DAC2222F7: to=<...>, relay=..., status=sent (...)"
_LINE = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) postfix/(?P<proc>[\w/-]+)"
    r"\[(?P<pid>\d+)\]: (?P<qid>[0-9A-F]{6,}|NOQUEUE): (?P<rest>.*)$"
)
_FIELD = re.compile(r"(\w+)=<([^>]*)>")


@dataclass
class Hop:
    """One Postfix queue file (one hop) of a message."""

    qid: str
    received: dt.datetime
    client: str | None = None
    sender: str | None = None
    size: int | None = None
    held: tuple[dt.datetime, str] | None = None
    deliveries: list[tuple[dt.datetime, str, str, str, str]] = field(default_factory=list)
    # (time, recipient, status, relay, text)


@dataclass
class Record:
    """What message trace knows of one message for one recipient."""

    id: str
    message_id: str
    sender: str
    recipient: str
    received: dt.datetime
    status: str  # delivered | pending | failed | quarantined
    size: int
    from_ip: str
    events: list[tuple[dt.datetime, str, str]]  # (time, event, description)
    queue_ids: list[str] = field(default_factory=list)  # Postfix's, for cleaning up after tests


def _time(ts: str, now: dt.datetime) -> dt.datetime:
    # Syslog has no year and the testbed logs in UTC: take this year (last year for a date
    # ahead of today, i.e. around New Year).
    when = dt.datetime.strptime(f"{now.year} {ts}", "%Y %b %d %H:%M:%S").replace(tzinfo=dt.UTC)
    return when.replace(year=now.year - 1) if when > now + dt.timedelta(days=1) else when


def parse(log: str, *, quarantined: set[str] | frozenset[str] = frozenset()) -> list[Record]:
    """Every message in ``log`` as trace records, one per (message, recipient).

    ``quarantined``: recipients whose held (never delivered) mail reports ``quarantined``: the
    stand-in's switch, since the testbed has no quarantine (docs/testing.md#graph-stand-in).
    """
    now = dt.datetime.now(dt.UTC)
    hops: dict[str, Hop] = {}
    message_of: dict[str, str] = {}
    order: list[str] = []
    # smtpd logs an access-table HOLD at RCPT as "NOQUEUE: hold: ..." before the queue file
    # exists; the same smtpd process's next "QID: client=" line is that message.
    holds: dict[str, tuple[dt.datetime, str, dict[str, str]]] = {}
    for line in log.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        qid, rest, at = m["qid"], m["rest"], _time(m["ts"], now)
        if qid == "NOQUEUE":
            if rest.startswith("hold:"):
                holds[m["pid"]] = (at, rest, dict(_FIELD.findall(rest)))
            continue
        hop = hops.get(qid)
        if hop is None:
            hop = hops[qid] = Hop(qid, at)
            order.append(qid)
        fields = dict(_FIELD.findall(rest))
        if rest.startswith("client="):
            ip = re.search(r"\[([^\]]+)\]", rest)
            hop.client = ip.group(1) if ip else None
            held = holds.pop(m["pid"], None)
            if held is not None:
                hat, text, hfields = held
                hop.held, hop.sender = (hat, text), hfields.get("from")
                if "to" in hfields:
                    hop.deliveries.append((hat, hfields["to"].lower(), "hold", "", text))
        elif rest.startswith("message-id="):
            message_of[qid] = rest.split("=", 1)[1].strip()
        elif rest.startswith("hold:"):
            hop.held = (at, rest)
            hop.sender = hop.sender or fields.get("from")
            if "to" in fields:
                hop.deliveries.append((at, fields["to"].lower(), "hold", "", rest))
        elif rest.startswith("from=<"):
            hop.sender = fields.get("from")
            size = re.search(r"size=(\d+)", rest)
            hop.size = int(size.group(1)) if size else hop.size
        elif rest.startswith("to=<"):
            status = re.search(r"status=(\w+)", rest)
            relay = re.search(r"relay=(\S+?),", rest)
            text = rest.split("status=", 1)[1] if "status=" in rest else rest
            hop.deliveries.append(
                (
                    at,
                    fields["to"].lower(),
                    status.group(1) if status else "",
                    relay.group(1) if relay else "",
                    text,
                )
            )
    by_message: dict[tuple[str, str], list[Hop]] = {}
    for qid in order:
        mid = message_of.get(qid)
        if not mid:
            continue
        for _at, rcpt, *_rest in hops[qid].deliveries:
            key = (mid, rcpt)
            if hops[qid] not in by_message.setdefault(key, []):
                by_message[key].append(hops[qid])
    return [_record(mid, rcpt, hs, quarantined) for (mid, rcpt), hs in by_message.items()]


def _record(mid: str, rcpt: str, hs: list[Hop], quarantined: set[str] | frozenset[str]) -> Record:
    first = hs[0]
    events: list[tuple[dt.datetime, str, str]] = [
        (first.received, "Receive", f"Message received by: smtp.probe.test (Postfix {first.qid})")
    ]
    final = "pending"
    for hop in hs:
        for at, to, status, relay, text in hop.deliveries:
            if to != rcpt:
                continue
            if status == "hold":
                if rcpt in quarantined or rcpt.split("@")[-1] in quarantined:
                    events.append((at, "Quarantine", "The message was quarantined."))
                    final = "quarantined"
                else:
                    events.append((at, "Defer", f"The message is held: {text}"))
            elif status == "sent" and "10024" in relay:  # LMTP into Dovecot: in the mailbox
                events.append((at, "Deliver", "The message was successfully delivered."))
                final = "delivered"
            elif status == "sent":
                events.append((at, "Send", f"Message sent to {relay}: {text}"))
            elif status == "deferred":
                events.append((at, "Defer", f"The message was deferred: {text}"))
            elif status == "bounced":
                events.append((at, "Fail", f"The message could not be delivered: {text}"))
                final = "failed"
    size = next((h.size for h in hs if h.size), 0) or 0
    return Record(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{mid}|{rcpt}")),
        message_id=mid,
        sender=(first.sender or "").lower(),
        recipient=rcpt,
        received=first.received,
        status=final,
        size=size,
        from_ip=first.client or "",
        events=events,
        queue_ids=[h.qid for h in hs],
    )
