"""Client secrets and access tokens never appear in anything a relayprobe process writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from probe.m365 import tokens as oauth_mod
from tests.oauth.fixture import READ_SECRET, SEND_SECRET, OAuthEnv, oauth, oauth_env  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
WRONG = "Wl5~leak-test-wrong-secret-value"


def _needles(env: OAuthEnv) -> dict[str, str]:
    """Every secret and token, plus the forms they travel in (XOAUTH2 blob, JWT parts)."""
    found = {"send secret": SEND_SECRET, "read secret": READ_SECRET, "wrong secret": WRONG}
    assert env.authority.tokens, "the run issued no token: nothing was tested"
    for i, token in enumerate(env.authority.tokens):
        _head, payload, signature = token.split(".")
        found |= {
            f"token {i}": token,
            f"token {i} payload": payload[40:120],
            f"token {i} signature": signature[:60],
        }
        for user in ("sender@oauth.test", "inbox@oauth.test"):
            blob = oauth_mod.xoauth2_string(user, token)
            found[f"token {i} XOAUTH2 for {user}"] = blob[len(blob) // 2 : len(blob) // 2 + 60]
    return found


@pytest.mark.parametrize("level", ["cli", "all"])
def test_nothing_the_process_writes_contains_a_secret_or_token(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
    level: str,
) -> None:
    log_file = tmp_path / "debug.log"
    targets = [
        oauth.target(name="good"),
        oauth.target(name="wrong-secret", smtp_auth=oauth.auth(client_secret=WRONG)),
        oauth.target(name="cert", smtp_auth=oauth.auth("app-cert")),
    ]
    config = {
        "instance": "leak",
        "tag_secret": "leak-test-tag-secret-0123456789",
        "targets": targets,
    }
    path = tmp_path / "relayprobe.yml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, **{oauth_mod.CA_ENV: str(oauth.ca_file), "PYTHONPATH": str(ROOT)})
    with log_file.open("wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.oauth.leak_driver", str(path), level],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            timeout=120,
        )
    written = proc.stdout.decode() + log_file.read_text()
    assert proc.returncode == 0, written[-3000:]
    # The run did what it should, so the grep covers real output:
    assert '"reason": "ok"' in written and '"reason": "oauth_token_failed"' in written
    assert "AADSTS7000215" in written and "smtp-auth" in written
    if level == "all":
        assert "DEBUG" in written  # third-party debug logging was really on
    leaks = [name for name, needle in _needles(oauth).items() if needle in written]
    assert not leaks, f"leaked: {leaks}"
