"""Throw-away key material for the embedded mail system: a private CA, a server cert, a DKIM key."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Names the server certificate is valid for: clients connect to 127.0.0.1 or localhost; the
# mx/smtp/imap names let a demo config use Microsoft-like host names mapped in /etc/hosts.
SERVER_IDENTITIES = ("127.0.0.1", "localhost", "smtp.demo.test", "mx.demo.test", "imap.demo.test")


@dataclass(frozen=True)
class TlsMaterial:
    """Paths of the generated CA and server certificate (PEM) under the state directory."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the throw-away CA (for tests and the demo)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls(state_dir: Path, host: str) -> TlsMaterial:
    """Generate a fresh CA and a server cert for ``host`` + SERVER_IDENTITIES into state_dir/tls."""
    tls_dir = state_dir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="relayprobe embedded demo CA")
    identities = dict.fromkeys((host, *SERVER_IDENTITIES))
    leaf = ca.issue_cert(*identities, common_name=host)
    material = TlsMaterial(tls_dir / "ca.crt", tls_dir / "server.crt", tls_dir / "server.key")
    ca.cert_pem.write_to_path(str(material.ca_file))
    leaf.cert_chain_pems[0].write_to_path(str(material.cert_file))
    leaf.private_key_pem.write_to_path(str(material.key_file))
    material.key_file.chmod(0o600)
    return material


@dataclass(frozen=True)
class DkimKey:
    """A DKIM signing key: PKCS#1 PEM for dkimpy and the DNS TXT value that publishes it."""

    private_pem: bytes
    txt_record: bytes

    def __repr__(self) -> str:  # the private key never appears in reprs or logs
        return "DkimKey(<private>)"


def make_dkim_key(bits: int = 2048) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    txt = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public_der)
    return DkimKey(private_pem, txt)
