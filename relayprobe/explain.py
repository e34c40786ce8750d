"""`relayprobe explain CODE`: what a Microsoft status code or Entra error means, why, what to do."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from typing import Any, TextIO

from probe.m365.authority import TRANSIENT_CODES
from probe.m365.codes import AADSTS, CODE_MEANINGS, Code, enhanced_code, entries_for, lookup
from probe.result import CONFIGURATION_REASONS, Reason

ACCEPTED = (
    'an enhanced status code (5.7.139), an SMTP reply line ("550 5.7.515 Access denied, ..."), '
    "or an Entra error code (AADSTS7000215) or error text containing one; - reads standard input"
)
#: A basic reply code followed by its enhanced code, anywhere in the text: a reply line as an
#: NDR or a log quotes it ("Remote Server returned '550 5.7.515 ...'", "smtp;550 5.7.515"), or
#: as Microsoft's pages write it ("550; 5.7.515", docs/m365.md#status-codes).
_REPLY = re.compile(r"(?<!\d)([245]\d\d)[ ;-]+#?([245]\.\d{1,3}\.\d{1,3})\b")
_AADSTS = re.compile(r"AADSTS(\d+)", re.IGNORECASE)
_FIELDS = ("table_code", "applies_when", "reason", "class", "meaning", "cause", "action", "docs")
_WIDTH = 100


def reason_class(reason: Reason) -> str:
    """The class of a reason (docs/architecture.md, "Reasons"): configuration or temporary."""
    return "configuration" if reason in CONFIGURATION_REASONS else "temporary"


def _class_note(reason: Reason) -> str:
    if reason in CONFIGURATION_REASONS:
        return "configuration class: relayprobe backs off"
    if reason is Reason.SMTP_REJECTED:
        return "temporary class; relayprobe backs off when it repeats"
    return "temporary class: the next run may succeed"


def _entry(code: Code) -> dict[str, Any]:
    return {
        "table_code": code.enhanced,
        "applies_when": code.match,
        "reason": code.reason.value,
        "class": reason_class(code.reason),
        "meaning": code.meaning,
        "cause": code.cause,
        "action": code.remedy,
        "docs": code.docs,
        "example": code.example,
    }


def _document(
    text: str, *, kind: str | None, code: str | None, reply_code: int | None = None
) -> dict[str, Any]:
    """The JSON shape of every answer, known or not: every field present, null when unknown."""
    return {
        "input": text,
        "known": False,
        "kind": kind,
        "code": code,
        "reply_code": reply_code,
        **dict.fromkeys(_FIELDS),
        "example": None,
        "variants": [],
    }


def _single(doc: dict[str, Any], entry: Code) -> dict[str, Any]:
    return {**doc, **_entry(entry), "known": True}


def _variants(doc: dict[str, Any], entries: tuple[Code, ...]) -> dict[str, Any]:
    """A code with several variants and no reply text to pick one: the code as a whole."""
    reasons = {e.reason for e in entries}
    classes = {reason_class(e.reason) for e in entries}
    docs = {e.docs for e in entries}

    def when(e: Code) -> str:
        return f'"{e.match}"' if e.match else "any other text"

    return {
        **doc,
        "known": True,
        "table_code": entries[0].enhanced,
        "reason": reasons.pop().value if len(reasons) == 1 else None,
        "class": classes.pop() if len(classes) == 1 else None,
        "meaning": CODE_MEANINGS.get(entries[0].enhanced, entries[0].meaning),
        "cause": "; ".join(f"{when(e)}: {e.cause}" for e in entries),
        "action": "; ".join(f"{when(e)}: {e.remedy}" for e in entries),
        "docs": docs.pop() if len(docs) == 1 else None,
        "variants": [_entry(e) for e in entries],
    }


def explain(text: str) -> dict[str, Any]:
    """What ``text`` (a code, a reply line, an AADSTS code or Entra text) means: the document
    ``--json`` prints; ``known`` is False when the table holds nothing for it."""
    found = _AADSTS.findall(text)
    if found:
        codes = [f"AADSTS{n}" for n in found]
        known = next((c for c in codes if c in AADSTS), None)
        doc = _document(text, kind="aadsts", code=known or codes[0])
        if known is None:
            return doc
        error = AADSTS[known]
        reason = (
            Reason.OAUTH_UNAVAILABLE
            if int(known[len("AADSTS") :]) in TRANSIENT_CODES
            else Reason.OAUTH_TOKEN_FAILED
        )
        return {
            **doc,
            "known": True,
            "table_code": known,
            "reason": reason.value,
            "class": reason_class(reason),
            "meaning": error.meaning,
            "cause": error.cause,
            "action": error.remedy,
            "docs": f"https://login.microsoftonline.com/error?code={known[len('AADSTS') :]}",
        }
    reply = _REPLY.search(text)
    if reply is not None:
        # A whole reply line: decided exactly as the probe classifies the reply (one table).
        reply_code, enhanced = int(reply.group(1)), reply.group(2)
        doc = _document(text, kind="smtp", code=enhanced, reply_code=reply_code)
        entry = lookup(reply_code, text[reply.start(2) :])
        return doc if entry is None else _single(doc, entry)
    enhanced = enhanced_code(text)
    if enhanced is None:
        return _document(text, kind=None, code=None)
    doc = _document(text, kind="smtp", code=enhanced)
    entries = entries_for(enhanced)
    lowered = text.lower()
    picked = [e for e in entries if e.match is not None and e.match in lowered]
    if picked:
        return _single(doc, picked[0])
    if len(entries) == 1:
        return _single(doc, entries[0])
    return _variants(doc, entries) if entries else doc


def _wrap(label: str, value: str, indent: str = "") -> list[str]:
    head = f"{indent}{label:<8} "
    lines = textwrap.wrap(
        value,
        _WIDTH,
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_long_words=False,  # URLs and cmdlets stay whole
        break_on_hyphens=False,
    )
    return lines or [head.rstrip()]


def _lines(item: dict[str, Any], indent: str = "") -> list[str]:
    lines: list[str] = []
    if item["applies_when"]:
        lines += _wrap("when:", f'the reply text contains "{item["applies_when"]}"', indent)
    for label in ("meaning", "cause", "action"):
        lines += _wrap(f"{label}:", item[label], indent)
    if item["docs"]:
        lines += _wrap("docs:", item["docs"], indent)
    return lines


def render(doc: dict[str, Any]) -> str:
    """The human form: one block, headed by the code and its reason and class."""
    title = doc["code"] if doc["reply_code"] is None else f"{doc['reply_code']} {doc['code']}"
    if not doc["variants"]:
        reason = Reason(doc["reason"])
        lines = [f"{title}  {reason.value} ({_class_note(reason)})", *_lines(doc)]
        return "\n".join(lines) + "\n"
    lines = [
        f"{title}  {len(doc['variants'])} variants, told apart by the reply text "
        "(paste the whole reply line to get one)",
        *_wrap("meaning:", doc["meaning"]),
    ]
    for variant in doc["variants"]:
        when = f'"{variant["applies_when"]}"' if variant["applies_when"] else "any other text"
        lines.append(f"- {when}: {variant['reason']} ({variant['class']} class)")
        lines += _lines({**variant, "applies_when": None}, indent="  ")
    return "\n".join(lines) + "\n"


def _unknown_message(doc: dict[str, Any]) -> str:
    code = doc["code"]
    if doc["kind"] == "aadsts":
        return (
            f"{code} is not in relayprobe's table of Entra errors; Microsoft explains it at "
            f"https://login.microsoftonline.com/error?code={code[len('AADSTS') :]}"
        )
    if doc["kind"] == "smtp":
        entries = entries_for(code)
        if doc["reply_code"] is not None and entries:
            if str(doc["reply_code"])[:1] != code[:1]:
                return (
                    f"a {doc['reply_code']} reply carrying {code} is not Microsoft's (the reply "
                    "class and the enhanced code disagree); relayprobe judges it by its reply class"
                )
            texts = ", ".join(f'"{e.match}"' for e in entries if e.match)
            return (
                f"{code} is in relayprobe's table only with specific reply texts ({texts}); this "
                "reply has none of them, so relayprobe judges it by its reply class"
            )
        return (
            f"{code} is not in relayprobe's table of Microsoft 365 codes (probe/m365/codes.py); "
            "relayprobe judges such a reply by its reply class (4xx temporary, 5xx refused)"
        )
    return "no status code and no AADSTS code found in it"


def run_explain(
    text: str, *, as_json: bool, out: TextIO, err: TextIO, stdin: TextIO | None = None
) -> int:
    """Explain ``text`` (``-`` reads standard input). Exit codes: 0 explained; 1 nothing known
    in it (an unknown code, or no code at all: the message says which forms are accepted; with
    ``as_json`` the document is still printed, ``known`` false); 3 nothing given (usage)."""
    if text.strip() == "-":
        text = (stdin or sys.stdin).read()
    text = " ".join(text.split())
    if not text:
        err.write(f"relayprobe explain: nothing to explain.\nIt accepts {ACCEPTED}.\n")
        return 3
    doc = explain(text)
    if as_json:
        out.write(json.dumps(doc) + "\n")
    elif doc["known"]:
        out.write(render(doc))
    if not doc["known"]:
        err.write(f"relayprobe explain: {_unknown_message(doc)}.\nIt accepts {ACCEPTED}.\n")
        return 1
    return 0
