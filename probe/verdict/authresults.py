"""Tolerant Authentication-Results parser: RFC 8601 and Microsoft's form without authserv-id."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from email.errors import MessageError
from email.header import decode_header, make_header

# Why hand-written: `authres` 1.2.0 raises SyntaxError on Microsoft's form (no authserv-id), and
# real headers also carry `;` inside comments, unbalanced comments, bare recipient-domain tokens
# (`hotmail.com;`) and missing spaces after `;`. This parser never raises; it skips what it cannot
# read.

#: Method names that start a new result even when a sender forgot the `;` before them.
KNOWN_METHODS = frozenset(
    {
        "spf",
        "dkim",
        "dmarc",
        "compauth",
        "arc",
        "dkim-atps",
        "iprev",
        "auth",
        "bimi",
        "sender-id",
        "domainkeys",
        "smime",
        "vbr",
        "rrvs",
        "dnswl",
    }
)

_WORD_STOP = set(' \t\r\n;=()"')
_METHOD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(?:/\d+)?$")
_KEY_RE = re.compile(r"^(?:[a-z][a-z0-9_-]*\.[a-z][a-z0-9_.-]*|reason|action)$", re.IGNORECASE)


@dataclass(frozen=True)
class MethodResult:
    """One `method=result` with its reason, first comment and properties (keys lower-cased)."""

    method: str
    result: str
    reason: str | None = None
    comment: str | None = None
    props: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthResults:
    """A parsed header value; ``authserv_id`` is ``None`` for Microsoft's form."""

    authserv_id: str | None
    results: list[MethodResult]


@dataclass
class _Draft:
    """A result being read; becomes a frozen MethodResult when its segment ends."""

    method: str
    result: str
    reason: str | None = None
    comment: str | None = None
    props: dict[str, str] = field(default_factory=dict)


@dataclass
class _Tok:
    kind: str  # word | eq | semi | comment | qstr
    text: str
    glued: bool  # no whitespace before this token


def clean_value(value: str) -> str:
    """Unfold a header value and decode RFC 2047 encoded-words (whole-value encoding is real)."""
    value = re.sub(r"\r?\n|\r", "", value)
    if "=?" in value:
        # A broken encoded-word (bad base64, unknown charset) keeps the raw text: it must not hide
        # the rest of the value.
        with contextlib.suppress(MessageError, ValueError, LookupError, UnicodeError):
            value = str(make_header(decode_header(value)))
    return value.strip()


def _read_comment(s: str, i: int) -> tuple[str, int]:
    """Read a comment starting at s[i] == '('; nested parens and `;` inside are kept."""
    depth, j, last_close = 0, i, -1
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            last_close = j
            if depth == 0:
                return s[i + 1 : j], j + 1
        j += 1
    # Unbalanced (seen: "dkim=fail (body hash mismatch (got b'..', expected b'..') header.d=x"):
    # end at the last ')' so the properties and later results still parse; else at the next ';'.
    if last_close > i:
        return s[i + 1 : last_close], last_close + 1
    semi = s.find(";", i)
    end = semi if semi != -1 else len(s)
    return s[i + 1 : end], end


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, glued = 0, False
    while i < len(s):
        c = s[i]
        if c in " \t\r\n":
            i, glued = i + 1, False
            continue
        if c == ";":
            toks.append(_Tok("semi", c, glued))
            i += 1
        elif c == "=":
            toks.append(_Tok("eq", c, glued))
            i += 1
        elif c == "(":
            text, i = _read_comment(s, i)
            toks.append(_Tok("comment", " ".join(text.split()), glued))
        elif c == ")":
            i += 1  # stray close paren: skip
        elif c == '"':
            j, buf = i + 1, []
            while j < len(s) and s[j] != '"':
                if s[j] == "\\" and j + 1 < len(s):
                    j += 1
                buf.append(s[j])
                j += 1
            toks.append(_Tok("qstr", "".join(buf), glued))
            i = j + 1
        else:
            j = i
            while j < len(s) and s[j] not in _WORD_STOP:
                j += 1
            toks.append(_Tok("word", s[i:j], glued))
            i = j
        glued = True
    return toks


def _segments(toks: list[_Tok]) -> list[list[_Tok]]:
    segs: list[list[_Tok]] = [[]]
    for t in toks:
        if t.kind == "semi":
            segs.append([])
        else:
            segs[-1].append(t)
    return segs


def _is_method(tok: _Tok, nxt: _Tok | None) -> bool:
    return (
        tok.kind == "word"
        and nxt is not None
        and nxt.kind == "eq"
        and "." not in tok.text
        and bool(_METHOD_RE.match(tok.text))
    )


def _is_key(seg: list[_Tok], i: int) -> bool:
    """seg[i] starts `key=value`: a method or `ptype.property` name with a glued `=` and value.

    Unlike base64 padding (`header.b=ab==`) or SRS/VERP local parts (`SRS0=HHH=TT=...`).
    """
    return (
        seg[i].kind == "word"
        and (seg[i].text.lower() in KNOWN_METHODS or bool(_KEY_RE.match(seg[i].text)))
        and i + 2 < len(seg)
        and seg[i + 1].kind == "eq"
        and seg[i + 1].glued
        and seg[i + 2].kind in ("word", "qstr")
        and seg[i + 2].glued
    )


def _read_value(seg: list[_Tok], i: int) -> tuple[str, int]:
    """Read a property value at seg[i]; glued `=`/words are part of it (base64 `header.b=ab==`)."""
    if i >= len(seg) or seg[i].kind not in ("word", "qstr"):
        return "", i  # empty value, e.g. Microsoft's `header.from=;`
    if _is_key(seg, i):
        return "", i  # `x= dkim=pass`: the next word is the next key, not this value
    parts = [seg[i].text]
    i += 1
    while i < len(seg) and seg[i].glued and seg[i].kind in ("word", "eq"):
        parts.append(seg[i].text)
        i += 1
    return "".join(parts), i


def _parse_segment(seg: list[_Tok]) -> list[MethodResult]:
    """Parse one `;`-separated piece: normally one result; bare tokens and junk are skipped."""
    out: list[MethodResult] = []
    cur: _Draft | None = None
    i = 0
    while i < len(seg):
        tok = seg[i]
        nxt = seg[i + 1] if i + 1 < len(seg) else None
        if tok.kind == "comment":
            if cur is not None and cur.comment is None:
                cur.comment = tok.text
            i += 1
            continue
        if tok.kind == "word" and nxt is not None and nxt.kind == "eq":
            key = tok.text.lower()
            value, j = _read_value(seg, i + 2)
            starts_new = cur is None or (key in KNOWN_METHODS and "." not in key)
            if starts_new and _is_method(tok, nxt):
                if cur is not None:
                    out.append(_finish(cur))
                # `dkim=` with no result has nothing to report
                cur = _Draft(key.split("/")[0], value.lower()) if value else None
            elif cur is not None:
                if key == "reason":
                    cur.reason = value
                cur.props.setdefault(key, value)
            i = j
            continue
        i += 1  # bare token (recipient domain, version number, `none`) or stray quote
    if cur is not None:
        out.append(_finish(cur))
    return out


def _finish(cur: _Draft) -> MethodResult:
    return MethodResult(cur.method, cur.result, cur.reason, cur.comment, cur.props)


def parse_authentication_results(value: str) -> AuthResults:
    """Parse an Authentication-Results (or ARC-/X-MS-Exchange- variant) value; never raises."""
    try:
        return _parse(clean_value(value))
    except Exception:  # the contract is "never raises on junk": unreadable means no results
        return AuthResults(authserv_id=None, results=[])


def _parse(value: str) -> AuthResults:
    segs = _segments(_tokenize(value))
    first = segs[0]
    # ARC-Authentication-Results starts with the instance tag `i=N;` before the authserv-id.
    if (
        len(first) == 3
        and first[0].text.lower() == "i"
        and first[1].kind == "eq"
        and first[2].text.isdigit()
    ):
        segs = segs[1:] or [[]]
        first = segs[0]
    authserv_id: str | None = None
    pairs = zip(first, [*first[1:], None], strict=True)
    if not any(_is_method(tok, nxt) for tok, nxt in pairs):
        words = [t.text for t in first if t.kind == "word"]
        authserv_id = words[0] if words else None
        segs = segs[1:]
    results = [r for seg in segs for r in _parse_segment(seg)]
    # Microsoft's 2017-2021 form puts the recipient domain as a bare token before each result
    # (`ucw.cz; dkim=none ... header.d=none;ucw.cz; dmarc=none ...`): that is no authserv-id.
    if authserv_id is not None and any(
        len(seg) == 1 and seg[0].kind == "word" and seg[0].text.lower() == authserv_id.lower()
        for seg in segs
    ):
        authserv_id = None
    return AuthResults(authserv_id=authserv_id, results=results)
