"""--web.config.file: HTTPS and bcrypt basic auth on the whole surface; flags and start-up errors."""

from __future__ import annotations

import base64
import http.client
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import trustme
import yaml

from exporters.webconfig import WebConfigError, load_web_config
from tests.system.daemon_helpers import ROOT, free_port, stop, wait_for

PASSWORD = "scrape-Secret-1"


def unreachable_config(tmp: Path) -> Path:
    """A valid config whose target points at a closed loopback port: no mail system needed."""
    doc = {
        "instance": "test-webconfig",
        "tag_secret": "relayprobe-test-tag-secret-0123456789",
        "defaults": {"interval": "1h", "jitter": 0},
        "targets": [
            {
                "name": "closed",
                "smtp": {"host": "127.0.0.1", "port": 1, "security": "tls", "timeout": "2s"},
                "mail_from": "probe@example.test",
                "rcpt_to": "inbox@example.test",
                "mailbox": {
                    "host": "127.0.0.1",
                    "port": 1,
                    "timeout": "2s",
                    "auth": {
                        "method": "password",
                        "username": "inbox@example.test",
                        "password": "x",
                    },
                },
            }
        ],
    }
    path = tmp / "relayprobe.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def tls_daemon(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "server.pem", "key_file": "server.pem"},
                "basic_auth_users": {"prometheus": hashed},
            }
        )
    )
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "exporters.daemon",
        "--config.file",
        str(unreachable_config(tmp_path)),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--web.config.file",
        str(tmp_path / "web.yml"),
    ]
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    try:
        yield f"https://127.0.0.1:{port}", context, proc, log
    finally:
        stop(proc)


def get(url: str, context: ssl.SSLContext, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_https_with_basic_auth_guards_every_endpoint(tls_daemon):
    url, context, proc, log = tls_daemon

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return get(f"{url}/-/healthy", context) == 401
        except urllib.error.URLError:
            return False

    wait_for("the TLS listener", up, 15)
    good = ("prometheus", PASSWORD)
    for path in ("/", "/metrics", "/api/results", "/-/ready", "/probe?target=closed"):
        assert get(url + path, context) == 401, path
        assert get(url + path, context, ("prometheus", "wrong")) == 401, path
        assert get(url + path, context, ("nobody", PASSWORD)) == 401, path
    assert get(f"{url}/metrics", context, good) == 200
    assert get(f"{url}/-/healthy", context, good) == 200
    # Plain HTTP on the TLS port gets no HTTP answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(url.replace("https", "http") + "/metrics", timeout=5)
    assert stop(proc) == 0
    assert PASSWORD not in log.read_text()


def test_web_config_errors_are_listed_at_once(tmp_path):
    (tmp_path / "web.yml").write_text(
        "tls_server_config: {cert_file: missing.pem, cipher: x}\n"
        "basic_auth_users: {alice: plaintext}\nhttp_server_config: {}\n"
    )
    with pytest.raises(WebConfigError) as info:
        load_web_config(tmp_path / "web.yml")
    text = "\n".join(info.value.errors)
    assert "http_server_config: unknown key" in text
    assert "tls_server_config.cipher: unknown key" in text
    assert "tls_server_config.cert_file: missing.pem is not a readable file" in text
    assert "tls_server_config.key_file: required" in text
    assert "basic_auth_users.alice: expected a bcrypt hash" in text and "plaintext" not in text


def test_bad_config_at_start_exits_3_naming_the_problem(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("tag_secret: relayprobe-test-tag-secret-0123456789\ntargets: []\nfoo: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "exporters.daemon", "--config.file", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3
    assert "foo: unknown key" in proc.stderr and "targets" in proc.stderr


def test_config_check_flag_validates_and_exits(tmp_path):
    path = unreachable_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "exporters.daemon", "--config.file", str(path), "--config.check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "ok (1 target(s))" in proc.stdout


def test_mismatched_key_is_a_web_config_error(tmp_path):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(str(tmp_path / "a.crt"))
    ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(tmp_path / "b.key"))
    (tmp_path / "web.yml").write_text("tls_server_config: {cert_file: a.crt, key_file: b.key}\n")
    with pytest.raises(WebConfigError) as info:
        load_web_config(tmp_path / "web.yml")
    assert "cannot load the certificate and key" in info.value.errors[0]
