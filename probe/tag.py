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
# Instance and target names follow the config's name pattern, which has no ";" or space; so does
# a run id. The optional r= (run id) sits after i=, and a tag without it is the original rp1 tag.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
_RUN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"
_TAG_RE = re.compile(
    rf"^v=rp1;i=(?P<instance>{_NAME})(?:;r=(?P<run>{_RUN}))?;t=(?P<target>{_NAME})"
    r";s=(?P<sent_at>[0-9]{1,12});n=(?P<nonce>[0-9a-f]{32});m=(?P<mac>[0-9a-f]{64});?$"
)
_RUN_RE = re.compile(_RUN)


def new_run_id() -> str:
    """A fresh run id: 64 random bits, hex."""
    return secrets.token_hex(8)


#: The run id of this process's short-lived probes (``relayprobe once``, check_m365_relay): one
#: per process, so a later target of the same ``once`` still sweeps an earlier one's late mail,
#: while another process on the same config never takes it (docs/architecture.md, "Cleanup").
PROCESS_RUN_ID = new_run_id()


@dataclass(frozen=True)
class Tag:
    """A probe's identity; ``str(tag)`` is the header value, ``probe_id`` the short human id."""

    instance: str
    target: str
    sent_at: int  # Unix seconds when the tag was made (just before sending)
    nonce: str  # 128 random bits, hex
    mac: str  # HMAC-SHA256 over the other fields, hex
    # The sending process's run id (short-lived probes); None for the daemon's long-lived watch
    # and for every tag made before run ids existed.
    run: str | None = None

    @property
    def probe_id(self) -> str:
        # 64 of the nonce's bits: unique enough to search Subject with, short enough to read.
        return self.nonce[:16]

    def __str__(self) -> str:
        payload = _payload(self.instance, self.run, self.target, self.sent_at, self.nonce)
        return f"{payload}; m={self.mac}"


def _payload(instance: str, run: str | None, target: str, sent_at: int, nonce: str) -> str:
    # Without a run id the payload is exactly the original rp1 one: tags of older versions still
    # verify, and an older version, whose pattern has no r=, ignores (never deletes) tags with one.
    who = f"i={instance}; r={run}" if run is not None else f"i={instance}"
    return f"v={_VERSION}; {who}; t={target}; s={sent_at}; n={nonce}"


def _mac(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode("ascii"), hashlib.sha256).hexdigest()


def make_tag(
    secret: bytes,
    *,
    instance: str,
    target: str,
    run: str | None = None,
    now: float | None = None,
) -> Tag:
    """Create a fresh tag for one probe of ``target`` sent by ``instance`` (in run ``run``)."""
    if run is not None and not _RUN_RE.fullmatch(run):
        raise ValueError(f"run id {run!r}: 1-32 characters from A-Z a-z 0-9 _ . -")
    sent_at = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    mac = _mac(secret, _payload(instance, run, target, sent_at, nonce))
    return Tag(instance=instance, target=target, sent_at=sent_at, nonce=nonce, mac=mac, run=run)


def verify_tag(secret: bytes, value: str | bytes | None) -> Tag | None:
    """Return the tag if ``value`` is well formed and its HMAC verifies under ``secret``, else None.

    Anything that does not verify (a look-alike, a forgery, another instance's secret) is None:
    such a message never counts as an arrival and is never deleted. The run id is covered by the
    HMAC like every other field: it cannot be added, removed or changed.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    match = _TAG_RE.match("".join(value.split()))  # header folding may have inserted whitespace
    if match is None:
        return None
    fields = match.groupdict()
    payload = _payload(
        fields["instance"], fields["run"], fields["target"], int(fields["sent_at"]), fields["nonce"]
    )
    expected = _mac(secret, payload)
    if not hmac.compare_digest(expected, fields["mac"]):
        return None
    return Tag(
        instance=fields["instance"],
        target=fields["target"],
        sent_at=int(fields["sent_at"]),
        nonce=fields["nonce"],
        mac=fields["mac"],
        run=fields["run"],
    )
