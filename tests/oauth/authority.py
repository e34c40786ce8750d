"""A small HTTPS token authority on 127.0.0.1 that MSAL talks to like Entra ID (test stand-in).

It serves OpenID discovery and a client-credentials token endpoint, checks client secrets and
client assertions (certificates) like Entra, answers with Entra's AADSTS error shapes, and issues
RS256 JWTs that carry the permitted mailbox in ``email`` (Dovecot's oauth2 passdb checks it).
Device-code sign-ins and refresh tokens (delegated permissions) are in tests/oauth/device.py.
Fault switches: ``outage(kind)`` / ``restore()`` and ``rotate_key()`` (tests/oauth/README.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import jwt
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.oauth.device import DEVICE_CODE_GRANT, DeviceGrants

SCOPE = "https://outlook.office365.com/.default"
AUDIENCE = "https://outlook.office365.com"
# Microsoft Graph (tests/graph/): a client with graph_roles may ask for Graph's scope and gets
# a token for Graph's audience carrying those application permissions in ``roles``.
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
NOT_PERMITTED = "no-mailbox-permission@invalid.test"
OutageKind = Literal["down", "503", "429"]
OUTAGE_KINDS: tuple[OutageKind, ...] = ("down", "503", "429")


@dataclass
class Client:
    """An app registration: its credential and the mailbox Exchange lets it use."""

    client_id: str
    mailbox: str
    secret: str | None = None
    certificate: x509.Certificate | None = None  # the public certificate uploaded to the app
    permitted: bool = True  # False: token still issued, but for no mailbox (missing permission)
    graph_roles: list[str] = field(default_factory=list)  # consented Graph app permissions

    @property
    def thumbprint(self) -> str | None:
        if self.certificate is None:
            return None
        return self.certificate.fingerprint(_sha1()).hex().upper()


def _sha1():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA1()


@dataclass
class Authority:
    """The stand-in authority; ``start()`` it, register clients, point MSAL at ``url``."""

    ca: trustme.CA
    tenant: str = "11111111-2222-3333-4444-555555555555"
    token_lifetime: int = 3600  # seconds; "expire tokens quickly" sets this low
    pad_bytes: int = 1800  # 2-4 KB like real Microsoft tokens (tests/oauth/README.md#token-size)
    clients: dict[str, Client] = field(default_factory=dict)
    issued: list[dict] = field(default_factory=list)  # claims of every token issued
    tokens: list[str] = field(default_factory=list)  # every token issued (for leak greps)
    requests: list[str] = field(default_factory=list)  # "GET /path" log of every request
    kid: str = "relayprobe-test-kid-1"
    # Called after rotate_key() wrote the new key (the fixture restarts Dovecot's auth process).
    on_key_change: Callable[[], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._server: ThreadingHTTPServer | None = None
        self._port = 0  # kept across outage("down"): MSAL's cached endpoints must stay valid
        self._ssl: ssl.SSLContext | None = None
        self._keys_dir: Path | None = None
        self._rotations = 0
        self._lock = threading.Lock()
        self.outage_kind: OutageKind | None = None
        self.retry_after = 60
        self.plain_429 = False
        self.device = DeviceGrants(self)  # public clients: device code + refresh tokens

    # --- set-up --------------------------------------------------------------------------
    def add_secret_client(self, client_id: str, secret: str, mailbox: str) -> Client:
        self.clients[client_id] = Client(client_id, mailbox, secret=secret)
        return self.clients[client_id]

    def add_cert_client(self, client_id: str, cert_pem: bytes, mailbox: str) -> Client:
        cert = x509.load_pem_x509_certificate(cert_pem)
        self.clients[client_id] = Client(client_id, mailbox, certificate=cert)
        return self.clients[client_id]

    def public_key_pem(self) -> bytes:
        return self.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def base(self) -> str:
        assert self._port, "start() the authority first"
        return f"https://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The authority URL for MSAL (``auth.authority``)."""
        return f"{self.base}/{self.tenant}"

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant}/"

    def start(self) -> Authority:
        if self._ssl is None:
            cert = self.ca.issue_cert("127.0.0.1", "localhost")
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._ssl)
        # HTTPServer sets SO_REUSEADDR, so the same port binds again right after outage("down").
        server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        self._port = server.server_address[1]
        # A short poll interval: outage("down") (shutdown) returns at once.
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="oauth-authority", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- fault switches (tests/oauth/README.md#fault-switches) -----------------------------
    def outage(self, kind: OutageKind, *, retry_after: int = 60, plain_429: bool = False) -> None:
        """Entra unavailable: "down" refuses connections (every endpoint); "503" / "429" make
        only the token endpoint fail (AADSTS90033 / throttling), discovery keeps answering."""
        if kind not in OUTAGE_KINDS:
            raise ValueError(f"unknown outage {kind!r}; one of {', '.join(OUTAGE_KINDS)}")
        self.restore()
        self.retry_after, self.plain_429 = retry_after, plain_429
        self.outage_kind = kind
        if kind == "down":
            self.stop()  # listening socket closed: connect() gets ECONNREFUSED

    def restore(self) -> None:
        """End any outage; after "down" the listener is back on the same port."""
        was_down = self.outage_kind == "down"
        self.outage_kind = None
        if was_down:
            self.start()

    def rotate_key(self) -> str:
        """A new signing key with a new kid; Dovecot gets the new public key and loses the old
        one, so tokens signed before are refused. Returns the new kid."""
        old = self.kid
        self._rotations += 1
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with self._lock:
            self.signing_key, self.kid = key, f"relayprobe-test-kid-{self._rotations + 1}"
        if self._keys_dir is not None:
            self.write_dovecot_key(self._keys_dir)
            (self._keys_dir / "default" / "RS256" / old).unlink(missing_ok=True)
        if self.on_key_change is not None:
            self.on_key_change()
        return self.kid

    def write_dovecot_key(self, keys_dir: Path) -> Path:
        """The public key where Dovecot's local validation looks: <azp>/<alg>/<kid>."""
        self._keys_dir = keys_dir
        path = keys_dir / "default" / "RS256" / self.kid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.public_key_pem())
        for p in (keys_dir, keys_dir / "default", path.parent):
            p.chmod(0o755)
        path.chmod(0o644)
        return path

    # --- token endpoint --------------------------------------------------------------------
    def token_count(self, client_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.issued if client_id in (None, c["appid"]))

    def _issue(self, client: Client, scope: str = SCOPE) -> dict:
        now = int(time.time())
        graph = scope == GRAPH_SCOPE
        claims = {
            "aud": GRAPH_AUDIENCE if graph else AUDIENCE,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime,
            "appid": client.client_id,
            "tid": self.tenant,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client.client_id)),
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client.client_id)),
            "roles": list(client.graph_roles) if graph else ["SMTP.SendAsApp", "IMAP.AccessAsApp"],
            "email": client.mailbox if client.permitted else NOT_PERMITTED,
            "jti": secrets.token_hex(8),
            "xms_pad": base64.b64encode(secrets.token_bytes(self.pad_bytes * 3 // 4)).decode(),
        }
        return {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": self.sign(claims),
        }

    def sign(self, claims: dict, *, record: bool = True) -> str:
        """An RS256 JWT with the key Dovecot validates against; recorded as issued."""
        with self._lock:  # key and kid change together in rotate_key()
            key, kid = self.signing_key, self.kid
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
        if record:
            with self._lock:
                self.issued.append(claims)
                self.tokens.append(token)
        return token

    def token_response(self, form: dict[str, str], endpoint: str) -> tuple[int, dict]:
        if form.get("grant_type") in (DEVICE_CODE_GRANT, "refresh_token"):
            return self.device.token(form)
        if form.get("grant_type") != "client_credentials":
            return _error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client = self.clients.get(form.get("client_id", ""))
        if client is None:
            return _error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found "
                f"in the directory '{self.tenant}'. This can happen if the application "
                "has not been installed by the administrator of the tenant.",
            )
        if form.get("scope") != SCOPE and not (
            form.get("scope") == GRAPH_SCOPE and client.graph_roles
        ):
            return _error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope')} is not valid.",
            )
        if "client_assertion" in form:
            problem = self._check_assertion(client, form, endpoint)
            if problem:
                return _error(401, "invalid_client", 700027, problem)
        elif client.secret is None or not secrets.compare_digest(
            form.get("client_secret", ""), client.secret
        ):
            return _error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. "
                "Ensure the secret being sent in the request is the client secret "
                "value, not the client secret ID, for a secret added to app "
                f"'{client.client_id}'.",
            )
        return 200, self._issue(client, form.get("scope", SCOPE))

    def _check_assertion(self, client: Client, form: dict[str, str], endpoint: str) -> str | None:
        if form.get("client_assertion_type") != ASSERTION_TYPE or client.certificate is None:
            return "Client assertion is not accepted for this application."
        assertion = form["client_assertion"]
        header = jwt.get_unverified_header(assertion)
        x5t = header.get("x5t") or ""
        thumb = base64.urlsafe_b64decode(x5t + "=" * (-len(x5t) % 4)).hex().upper()
        if thumb != client.thumbprint:
            return (
                f"Client assertion contains an invalid signature. [Reason - The key was not "
                f"found., Thumbprint of key used by client: '{thumb}']"
            )
        try:
            claims = jwt.decode(
                assertion,
                client.certificate.public_key(),
                algorithms=["RS256", "PS256"],
                audience=endpoint,
            )
        except jwt.PyJWTError as exc:
            return f"Client assertion failed signature validation. ({type(exc).__name__})"
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            return "Client assertion issuer or subject does not match the client id."
        return None


def _error(
    status: int, error: str, code: int, text: str, *, error_uri: bool = True
) -> tuple[int, dict]:
    """Entra's error body: the description ends in CRLF-separated Trace ID, Correlation ID and
    Timestamp lines, new ids per answer (tests/oauth/README.md#entra-error-bodies)."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
        f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
    }
    if error_uri:
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={code}"
    return status, body


def outage_response(authority: Authority) -> tuple[int, dict | str, dict[str, str]] | None:
    """What the token endpoint answers during outage("503"/"429"): status, body, headers."""
    if authority.outage_kind == "503":
        # Observed from Entra (Azure/azure-sdk-for-python#14241): no error_uri, no Retry-After.
        status, body = _error(
            503,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
            error_uri=False,
        )
        return status, body, {}
    if authority.outage_kind == "429":
        headers = {"Retry-After": str(authority.retry_after)}
        if authority.plain_429:
            return 429, "Too Many Requests", headers
        status, body = _error(
            429,
            "invalid_grant",
            50196,
            "The server terminated an operation because it encountered a client request loop. "
            "Please contact your app vendor.",
        )
        return status, body, headers
    return None


def _handler(authority: Authority) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(
            self, status: int, body: dict | str, headers: dict[str, str] | None = None
        ) -> None:
            if isinstance(body, str):
                data, kind = body.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(body).encode(), "application/json; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            authority.requests.append(f"GET {self.path}")
            parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
            if parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                if parts[0] != authority.tenant:
                    return self._send(
                        *_error(
                            400,
                            "invalid_tenant",
                            90002,
                            f"Tenant "
                            f"'{parts[0]}' not found. Check to make sure you have the "
                            "correct tenant ID.",
                        )
                    )
                t = f"{authority.base}/{authority.tenant}"
                return self._send(
                    200,
                    {
                        "issuer": f"{t}/v2.0",
                        "token_endpoint": f"{t}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
                        "jwks_uri": f"{t}/discovery/v2.0/keys",
                        "token_endpoint_auth_methods_supported": [
                            "client_secret_post",
                            "private_key_jwt",
                        ],
                    },
                )
            return self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            authority.requests.append(f"POST {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            endpoint = f"{authority.base}{urllib.parse.urlsplit(self.path).path}"
            if self.path.split("?")[0] == f"/{authority.tenant}/oauth2/v2.0/devicecode":
                return self._send(*authority.device.devicecode(form))
            if self.path.split("?")[0] != f"/{authority.tenant}/oauth2/v2.0/token":
                return self._send(404, {"error": "not_found"})
            failing = outage_response(authority)
            if failing is not None:
                return self._send(*failing)
            self._send(*authority.token_response(form, endpoint))

    return Handler


def thumbprint_of(cert_pem: bytes) -> str:
    """SHA-1 thumbprint (hex, upper case) of a PEM certificate, as Entra shows it."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper()
