"""`relayprobe analyze FILE`: print the receiver's verdict from a saved message or header block."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from probe.result import HeaderVerdict, rfc3339
from probe.verdict.headers import RECOGNISED, header_block, parse_headers, split_headers

_DEST = {"I": "Inbox", "J": "Junk Email", "C": "a custom folder (inbox rule)"}
_SFV = {
    "SKN": "Microsoft skipped spam filtering: marked not-spam before filtering (mail flow rule)",
    "SKS": "marked as spam before filtering (mail flow rule or on-premises decision)",
    "SKA": "allowed by the anti-spam policy's allow list, filtering skipped",
    "SKI": "filtering skipped (IP Allow List or same-tenant mail)",
    "SKB": "blocked by the anti-spam policy's block list",
    "SFE": "allowed by the recipient's Safe Senders list",
    "BLK": "blocked by the recipient's Blocked Senders list",
    "SKQ": "released from quarantine",
}


def run_analyze(path: str, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Read a saved message or header block (``-`` = stdin; CRLF or LF) and print its verdict.

    Prints a readable summary, or with ``as_json`` the result contract's ``auth`` and ``spam``
    objects as one JSON line. Exit codes: 0 verdict printed; 1 the input holds no header this
    command recognises (Authentication-Results, X-MS-Exchange-Authentication-Results, Microsoft
    spam stamps, Received) - usually the body only, or not a mail at all; the all-null verdict is
    still printed so scripts get the usual shape; 2 the file cannot be read.
    """
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        where = "standard input" if path == "-" else path
        err.write(
            f"relayprobe analyze: cannot read {where}: {exc.strerror or exc}. "
            "Give the path of a saved message (.eml) or header block, or - for standard input.\n"
        )
        return 2
    block = header_block(data)
    verdict = parse_headers(block)
    recognised = any(name in RECOGNISED for name, _ in split_headers(block))
    if as_json:
        out.write(json.dumps(as_document(verdict)) + "\n")
    else:
        out.write(render(verdict))
    if not recognised:
        err.write(
            f"relayprobe analyze: no Authentication-Results, Microsoft spam or Received header in "
            f"{'standard input' if path == '-' else path}. Save the whole message with its headers "
            "(Outlook: File > Properties > Internet headers; IMAP: BODY[HEADER]) and try again.\n"
        )
        return 1
    return 0


def as_document(verdict: HeaderVerdict) -> dict[str, object]:
    """Everything the text form shows, as JSON: the result contract's ``auth`` and ``spam``
    (plus every DKIM result and Microsoft's delivery destination), the hops, the arrival time
    and the one-line interpretation."""
    document = verdict.to_dict()
    document["auth"]["dkim_all"] = list(verdict.auth.dkim_all)
    document["spam"]["dest"] = verdict.spam.dest
    document["hops"] = [
        {
            "from": hop.from_,
            "by": hop.by,
            "at": rfc3339(hop.at),
            "delay_seconds": hop.delay_seconds,
        }
        for hop in verdict.hops
    ]
    document["arrived_at"] = rfc3339(verdict.arrived_at)
    document["verdict"] = interpret(verdict)
    return document


def _show(value: object) -> str:
    return "-" if value is None else str(value)


def render(verdict: HeaderVerdict) -> str:
    """The human-readable form: auth, spam, hops, arrival and a one-line interpretation."""
    auth, spam = verdict.auth, verdict.spam
    lines = [
        f"Authentication (from {auth.source}):"
        if auth.source
        else "Authentication: no Authentication-Results written by the receiving side"
    ]
    lines.append(f"  spf       {_show(auth.spf)}")
    dkim_note = f"   (all signatures: {', '.join(auth.dkim_all)})" if len(auth.dkim_all) > 1 else ""
    lines.append(f"  dkim      {_show(auth.dkim)}{dkim_note}")
    action = f"   action={auth.dmarc_action}" if auth.dmarc_action else ""
    lines.append(f"  dmarc     {_show(auth.dmarc)}{action}")
    reason = f"   reason={auth.compauth_reason}" if auth.compauth_reason else ""
    lines.append(f"  compauth  {_show(auth.compauth)}{reason}")
    dest = f" ({_DEST[spam.dest]})" if spam.dest in _DEST else ""
    lines.append(
        f"Spam: SCL {_show(spam.scl)}  BCL {_show(spam.bcl)}  SFV {_show(spam.sfv)}  "
        f"CAT {_show(spam.cat)}  dest {_show(spam.dest)}{dest}"
    )
    if verdict.hops:
        lines.append("Hops (oldest first):")
        for n, hop in enumerate(verdict.hops, 1):
            delay = f"  +{hop.delay_seconds:g} s" if hop.delay_seconds is not None else ""
            lines.append(
                f"  {n}. {_show(hop.from_)} -> {_show(hop.by)}  {_show(rfc3339(hop.at))}{delay}"
            )
    lines.append(f"Arrived: {_show(rfc3339(verdict.arrived_at))}")
    lines.append(f"Verdict: {interpret(verdict)}")
    return "\n".join(lines) + "\n"


def interpret(verdict: HeaderVerdict) -> str:
    """One sentence on what Microsoft's spam stamps (and DMARC) say about this message."""
    spam, auth = verdict.spam, verdict.auth
    folder = f", delivered to {_DEST[spam.dest]} (dest:{spam.dest})" if spam.dest in _DEST else ""
    scl = spam.scl
    if spam.sfv in _SFV:
        text = f"SFV:{spam.sfv}: {_SFV[spam.sfv]}"
    elif scl is not None and scl >= 7:
        text = f"SCL {scl}: Microsoft filtered this as high-confidence spam"
    elif spam.sfv == "SPM" or (scl is not None and scl >= 5):
        text = f"SCL {_show(scl)} + SFV:{_show(spam.sfv)}: Microsoft filtered this as spam"
    elif scl == -1:
        text = "SCL -1: Microsoft skipped spam filtering (mail flow rule or internal mail)"
    elif spam.dest == "J":
        text = f"SCL {_show(scl)}: not marked as spam but sent to Junk (user or mailbox rules)"
    elif scl is not None or spam.sfv == "NSPM":
        text = f"SCL {_show(scl)}: Microsoft did not consider this spam"
    else:
        text = "no trusted Microsoft spam stamps (receiver is not Exchange Online)"
    if spam.cat and spam.cat not in ("NONE", "SPM"):
        text += f"; category {spam.cat}"
    if auth.dmarc == "fail":
        action = f" (action {auth.dmarc_action})" if auth.dmarc_action else ""
        text += f"; DMARC failed{action}"
    return text + folder
