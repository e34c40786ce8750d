"""TLS client contexts with verification always on, TLS 1.2 or newer, and certificate facts."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any


def client_context(
    *,
    ca_file: Path | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
) -> ssl.SSLContext:
    """A verifying client context; ``ca_file`` replaces the system trust store when given."""
    # create_default_context loads the system store only when no cafile is named, so a private
    # CA is trusted alone (test systems, internal relays) and verification is never switched off.
    # A file that vanished since the config was loaded (a rotated secret mount, a rebuilt test
    # CA) raises OSError here; callers turn it into a tls_failed result naming the path.
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert_file is not None:
        ctx.load_cert_chain(
            str(client_cert_file), str(client_key_file) if client_key_file else None
        )
    return ctx


def describe(ssl_object: Any) -> tuple[str | None, str | None, dt.datetime | None]:
    """Return (TLS version, cipher name, peer certificate notAfter) of an established connection."""
    if ssl_object is None:
        return None, None, None
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    not_after = None
    cert = ssl_object.getpeercert()
    if cert and cert.get("notAfter"):
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)
    return version, cipher[0] if cipher else None, not_after
