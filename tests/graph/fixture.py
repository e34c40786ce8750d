"""Pytest fixtures for the Graph stand-in: import ``graph_env`` (and ``graph``) into a test module."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from probe.config import Config, parse_config
from probe.graph.trace import LIMITER
from probe.m365 import tokens as oauth_mod
from tests.graph.standin import GraphStandIn
from tests.oauth.authority import Authority

# Test-only credentials (not secrets of anything real); distinctive so leak greps can find them.
GRAPH_SECRET = "Gx7~test-secret-GRAPH-5c2e9a1b"
TAG_SECRET = "graph-stand-in-tag-secret-0123456789"
MAILBOX = "inbox@probe.test"
SENDER = "probe@probe.test"
#: App registrations on the local authority: client id -> (mailbox in scope, Graph roles).
APPS = {
    "app-graph": (MAILBOX, ["Mail.ReadWrite", "ExchangeMessageTrace.Read.All"]),
    "app-graph-readonly": (MAILBOX, ["Mail.Read"]),
    "app-graph-elsewhere": ("sender@probe.test", ["Mail.ReadWrite"]),
}


@dataclass
class GraphEnv:
    """The running stand-in, its authority and CA file, and config builders for the testbed."""

    standin: GraphStandIn
    authority: Authority
    ca_file: Path  # the stand-in's and the authority's CA (trustme)
    tb: Any

    def target(self, name: str, extension: str, **over: Any) -> dict[str, Any]:
        """A submission target through the testbed into inbox+<extension>@probe.test, read over
        Graph (the stand-in) with the app-only client ``app-graph``."""
        target: dict[str, Any] = {
            "name": name,
            "smtp": {
                "host": self.tb.host,
                "port": self.tb.submission_port,
                "security": "starttls",
                "ca_file": str(self.tb.ca_file),
                "timeout": "10s",
                "auth": {
                    "method": "password",
                    "username": SENDER,
                    "password": self.tb.users[SENDER],
                },
            },
            "mail_from": SENDER,
            "rcpt_to": f"inbox+{extension}@probe.test",
            "mailbox": {
                "protocol": "graph",
                "graph_url": self.standin.base,
                "ca_file": str(self.ca_file),
                "auth": self.auth(),
                "poll": {"fast": 0.1, "fast_window": 5, "interval": 0.5, "idle": 5},
            },
            "timeout": "20s",
            "expect": {"spf": "pass", "dkim": "pass", "dmarc": "pass", "placement": "inbox"},
        }
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
        return target

    def auth(self, client: str = "app-graph") -> dict[str, Any]:
        return {
            "method": "oauth2",
            "username": MAILBOX,
            "authority": self.authority.url,
            "client_id": client,
            "client_secret": GRAPH_SECRET,
        }

    def config(self, *targets: dict[str, Any], instance: str | None = None) -> Config:
        data = {
            "instance": instance or f"graph-{secrets.token_hex(4)}",
            "tag_secret": TAG_SECRET,
            "targets": list(targets),
        }
        return parse_config(data, base_dir=Path("/"), environ={})

    def reset(self) -> None:
        self.standin.reset()
        self.authority.restore()
        self.authority.token_lifetime = 3600
        LIMITER.reset()
        oauth_mod.clear_token_cache()


_shared: list[GraphEnv] = []  # one running stand-in per process
_users = [0]


@pytest.fixture(scope="session")
def graph_env(testbed: Any) -> Iterator[GraphEnv]:
    # Every test module imports this fixture and pytest keeps one "session" instance per module;
    # they share one stand-in, stopped when the last one ends (as tests/oauth/fixture.py does).
    if not _shared:
        ca = trustme.CA()
        authority = Authority(ca).start()
        for client_id, (mailbox, roles) in APPS.items():
            authority.add_secret_client(client_id, GRAPH_SECRET, mailbox).graph_roles = roles
        ca_file = Path(tempfile.mkdtemp(prefix="relayprobe-graph-")) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        standin = GraphStandIn(
            authority=authority,
            ca=ca,
            passwords=dict(testbed.users),
            imap_host=testbed.host,
            imap_port=testbed.imap_tls_port,
            imap_ca_file=testbed.ca_file,
            postfix_log=testbed.state_dir / "log" / "postfix.log",
        ).start()
        _shared.append(GraphEnv(standin, authority, ca_file, testbed))
    _users[0] += 1
    env = _shared[0]
    try:
        yield env
    finally:
        _users[0] -= 1
        if _users[0] == 0:
            _shared.clear()
            env.standin.stop()
            env.authority.stop()
            shutil.rmtree(env.ca_file.parent, ignore_errors=True)


@pytest.fixture
def graph(graph_env: GraphEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphEnv]:
    """The stand-in with switches reset, the token cache empty and the authority's CA trusted."""
    monkeypatch.setenv(oauth_mod.CA_ENV, str(graph_env.ca_file))
    graph_env.reset()
    yield graph_env
    graph_env.reset()
