"""``--web.config.file`` in the Prometheus exporter-toolkit format: TLS and bcrypt basic auth."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version"}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Checked when the user is unknown, so a wrong name costs as much time as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"relayprobe-no-such-user", bcrypt.gensalt(rounds=10))


class WebConfigError(Exception):
    """The web config file is unusable; ``errors`` lists every problem as ``path: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class WebConfig:
    """TLS settings (None: plain HTTP) and the users allowed in (empty: no authentication)."""

    tls: dict[str, Any] | None = None
    users: dict[str, bytes] = field(default_factory=dict, repr=False)
    base_dir: Path = Path(".")
    _ok: dict[bytes, str] = field(default_factory=dict, repr=False)  # digest of good pairs -> user

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.load_certs(ctx)
        ctx.minimum_version = _VERSIONS[self.tls.get("min_version", "TLS12")]
        ctx.verify_mode = _CLIENT_AUTH[self.tls.get("client_auth_type", "NoClientCert")]
        if self.tls.get("client_ca_file"):
            ctx.load_verify_locations(cafile=self._path(self.tls["client_ca_file"]))
        return ctx

    def load_certs(self, ctx: ssl.SSLContext) -> None:
        """(Re)load the certificate and key into ``ctx``: new handshakes use them (reload)."""
        assert self.tls is not None
        ctx.load_cert_chain(self._path(self.tls["cert_file"]), self._path(self.tls["key_file"]))

    def _path(self, value: str) -> str:
        return str((self.base_dir / Path(value).expanduser()).resolve())

    async def check(self, user: str, password: str) -> bool:
        """True if the pair matches a configured bcrypt hash (bcrypt runs off the event loop)."""
        # A digest of a checked pair, so a scraper's every request does not cost a bcrypt round.
        digest = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if self._ok.get(digest) == user and user in self.users:
            return True
        hashed = self.users.get(user, _DUMMY_HASH)
        ok = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        ok = ok and user in self.users
        if ok:
            if len(self._ok) > 1000:
                self._ok.clear()
            self._ok[digest] = user
        return ok


def load_web_config(path: str | Path | None) -> WebConfig:
    """Read and check the web config; every problem at once, like the main config."""
    if path is None:
        return WebConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise WebConfigError([f"{p}: cannot read web config file: {exc.strerror or exc}"]) from None
    except yaml.YAMLError:
        raise WebConfigError([f"{p}: invalid YAML"]) from None
    if not isinstance(data, dict):
        raise WebConfigError([f"{p}: expected a mapping at the top"])
    errors: list[str] = []
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users"):
            errors.append(f"{key}: unknown key (supported: tls_server_config, basic_auth_users)")
    tls = data.get("tls_server_config")
    if tls is not None:
        errors += _check_tls(tls, p.absolute().parent)
    users: dict[str, bytes] = {}
    raw_users = data.get("basic_auth_users") or {}
    if not isinstance(raw_users, dict):
        errors.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        raw_users = {}
    for user, hashed in raw_users.items():
        # The hash is not a secret by itself, but it is never echoed: only its shape is judged.
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            errors.append(f"basic_auth_users.{user}: expected a bcrypt hash ($2a$/$2b$/$2y$...)")
            continue
        users[str(user)] = hashed.encode()
    if errors:
        raise WebConfigError([f"{p}: {e}" for e in errors])
    config = WebConfig(tls=tls, users=users, base_dir=p.absolute().parent)
    if tls is not None:
        try:  # a key that does not match the certificate is found now, not at the first client
            config.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise WebConfigError(
                [f"{p}: tls_server_config: cannot load the certificate and key: {why}"]
            ) from None
    return config


def _check_tls(tls: Any, base: Path) -> list[str]:
    if not isinstance(tls, dict):
        return ["tls_server_config: expected a mapping"]
    errors = [f"tls_server_config.{k}: unknown key" for k in tls if k not in _TLS_KEYS]
    for key in ("cert_file", "key_file"):
        value = tls.get(key)
        if not value:
            errors.append(f"tls_server_config.{key}: required")
        elif not (base / Path(str(value)).expanduser()).is_file():
            errors.append(f"tls_server_config.{key}: {value} is not a readable file")
    if tls.get("client_auth_type", "NoClientCert") not in _CLIENT_AUTH:
        errors.append(f"tls_server_config.client_auth_type: one of {', '.join(_CLIENT_AUTH)}")
    verify = tls.get("client_auth_type") in (
        "RequireAndVerifyClientCert",
        "VerifyClientCertIfGiven",
    )
    if verify and not tls.get("client_ca_file"):
        errors.append("tls_server_config.client_ca_file: required to verify client certificates")
    if tls.get("min_version", "TLS12") not in _VERSIONS:
        errors.append("tls_server_config.min_version: one of TLS12, TLS13")
    return errors
