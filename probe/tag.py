"""HMAC-authenticated probe tags: who sent a probe mail, when, and proof that it was us."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

#: Header carrying the full tag; Subject and Message-ID carry only the short probe id.
TAG_HEADER = "X-Relayprobe-Tag"
SUBJECT_MARKER = "[relayprobe]"
_VERSION = "rp1"
# DKIM-like "k=v; " fields: the spaces let the header fold instead of being RFC 2047-encoded.
# Instance and target names follow the config's name pattern, which has no ";" or space.
_TAG_RE = re.compile(
    r"^v=rp1;i=(?P<instance>[A-Za-z0-9][A-Za-z0-9_.-]{0,62});t=(?P<target>[A-Za-z0-9][A-Za-z0-9_.-]{0,62})"
    r";s=(?P<sent_at>[0-9]{1,12});n=(?P<nonce>[0-9a-f]{32});m=(?P<mac>[0-9a-f]{64});?$"
)


@dataclass(frozen=True)
class Tag:
    """A probe's identity; ``str(tag)`` is the header value, ``probe_id`` the short human id."""

    instance: str
    target: str
    sent_at: int  # Unix seconds when the tag was made (just before sending)
    nonce: str  # 128 random bits, hex
    mac: str  # HMAC-SHA256 over the other fields, hex

    @property
    def probe_id(self) -> str:
        # 64 of the nonce's bits: unique enough to search Subject with, short enough to read.
        return self.nonce[:16]

    def __str__(self) -> str:
        return f"{_payload(self.instance, self.target, self.sent_at, self.nonce)}; m={self.mac}"


def _payload(instance: str, target: str, sent_at: int, nonce: str) -> str:
    return f"v={_VERSION}; i={instance}; t={target}; s={sent_at}; n={nonce}"


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode("ascii"), hashlib.sha256).hexdigest()


def make_tag(secret: bytes, *, instance: str, target: str, now: float | None = None) -> Tag:
    """Create a fresh tag for one probe of ``target`` sent by ``instance``."""
    sent_at = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    mac = _mac(secret, _payload(instance, target, sent_at, nonce))
    return Tag(instance=instance, target=target, sent_at=sent_at, nonce=nonce, mac=mac)


def verify_tag(secret: bytes, value: str | bytes | None) -> Tag | None:
    """Return the tag if ``value`` is well formed and its HMAC verifies under ``secret``, else None.

    Anything that does not verify (a look-alike, a forgery, another instance's secret) is None:
    such a message never counts as an arrival and is never deleted.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _TAG_RE.match("".join(value.split()))  # header folding may have inserted whitespace
    if match is None:
        return None
    fields = match.groupdict()
    expected = _mac(
        secret,
        _payload(fields["instance"], fields["target"], int(fields["sent_at"]), fields["nonce"]),
    )
    if not hmac.compare_digest(expected, fields["mac"]):
        return None
    return Tag(
        instance=fields["instance"],
        target=fields["target"],
        sent_at=int(fields["sent_at"]),
        nonce=fields["nonce"],
        mac=fields["mac"],
    )
