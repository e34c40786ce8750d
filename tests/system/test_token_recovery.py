"""The daemon recovers OAuth tokens on its own: key rotation, reload and an authority outage."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.oauth import fixture as oauth_fixture
from tests.oauth.fixture import OAuthEnv, oauth, oauth_env  # noqa: F401  (pytest fixtures)
from tests.system.daemon_helpers import Daemon, http, ready, start_daemon, stop, value, wait_for

INTERVAL = 4.0  # seconds between scheduled runs of the one target
RUN = 8.0  # allowance for one run (token request, SMTP, delivery, IMAP) on a loaded machine
TARGET = "oauth"


@contextmanager
def oauth_daemon(env: OAuthEnv, tmp: Path) -> Iterator[Daemon]:
    """`python -m exporters.daemon` with one OAuth stand-in target, trusting the stand-in's CA."""
    target = env.target(interval=f"{INTERVAL:g}s", jitter=0)
    doc = {
        "instance": f"recovery-{secrets.token_hex(4)}",
        "tag_secret": oauth_fixture.TAG_SECRET,
        "targets": [target],
    }
    d = start_daemon(None, tmp, doc, env={"RELAYPROBE_OAUTH_CA_FILE": str(env.ca_file)})
    try:
        wait_for("/-/ready", lambda: ready(d), 20)
        yield d
    finally:
        stop(d.proc)


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_started_after(d: Daemon, after: dt.datetime, timeout: float) -> dict[str, Any]:
    """The first result of a run that started after ``after`` (runs are INTERVAL apart, polled
    every 0.1 s, so none is missed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = d.results().get(TARGET)
        if result is not None and _when(result["started_at"]) > after:
            return result
        time.sleep(0.1)
    raise AssertionError(
        f"no run started after {after.isoformat()} finished within {timeout:g} s; "
        f"last result: {json.dumps(d.results().get(TARGET))}\n{tail(d)}"
    )


def first_success(d: Daemon) -> dict[str, Any]:
    result = wait_for("a first successful run", lambda: _success(d), 30)
    assert isinstance(result, dict)
    return result


def _success(d: Daemon) -> dict[str, Any] | None:
    result = d.results().get(TARGET)
    return result if result is not None and result["success"] else None


def tail(d: Daemon, lines: int = 25) -> str:
    return "daemon log (last lines):\n" + "\n".join(d.log.read_text().splitlines()[-lines:])


def shown(result: dict[str, Any]) -> str:
    keys = ("status", "stage", "reason", "message", "remedy", "started_at", "finished_at")
    return json.dumps({k: result.get(k) for k in keys})


def backoff(d: Daemon) -> float | None:
    return value(d.metrics(), "relayprobe_backoff_seconds", target=TARGET)


def last_issued_at(env: OAuthEnv, client: str) -> float:
    return max(c["iat"] for c in env.authority.issued if c["appid"] == client)


@pytest.mark.parametrize("token_age", ["young", "aged"])
def test_rotated_signing_key_is_recovered_by_the_next_run(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
    token_age: str,
) -> None:
    """A refused cached token is dropped and a fresh one tried first (docs/architecture.md,
    Reasons: auth_failed): the next run after the rollover succeeds. "young": the key rotates
    right after the first run, "aged": once the cached token is over 12 s old."""
    with oauth_daemon(oauth, tmp_path) as d:
        ok = first_success(d)
        if token_age == "aged":
            issued = last_issued_at(oauth, "app-send")
            while _when(ok["started_at"]).timestamp() < issued + 12:
                ok = run_started_after(d, _when(ok["started_at"]), INTERVAL + RUN)
                assert ok["success"], shown(ok)
        sent_before = oauth.authority.token_count("app-send")
        rotated = _now()
        oauth.authority.rotate_key()
        after = run_started_after(d, rotated, INTERVAL + RUN)
        took = (_when(after["finished_at"]) - rotated).total_seconds()
        sent_after = oauth.authority.token_count("app-send")
        assert after["success"] and after["reason"] == "ok", (
            f"first run after the key rotation (cached token {token_age}): {shown(after)}\n"
            f"app-send tokens issued before/after: {sent_before}/{sent_after}\n{tail(d)}"
        )
        assert took <= INTERVAL + RUN, f"recovered only {took:.1f} s after the rotation"
        assert sent_after > sent_before, "no new token was requested after the refusal"
        assert backoff(d) == 0


def test_reload_fetches_a_new_token_and_the_target_stays_ok(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
) -> None:
    with oauth_daemon(oauth, tmp_path) as d:
        first_success(d)
        tokens_before = oauth.authority.token_count()
        reloaded = _now()
        status, body, _ = http(f"{d.url}/-/reload", method="POST")
        assert status == 200, body
        after = run_started_after(d, reloaded, INTERVAL + RUN)
        assert after["success"] and after["reason"] == "ok", f"{shown(after)}\n{tail(d)}"
        assert oauth.authority.token_count() > tokens_before, (
            f"no token requested after the reload ({tokens_before} before and after)"
        )
        assert value(d.metrics(), "relayprobe_config_last_reload_successful") == 1


def test_authority_outage_is_temporary_no_backoff_and_the_next_run_after_restore_succeeds(
    oauth: OAuthEnv,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Tokens renew every run (renewal at 3/4 of a 3 s lifetime), so each run asks the authority.
    oauth.authority.token_lifetime = 3
    with oauth_daemon(oauth, tmp_path) as d:
        first_success(d)
        down = _now()
        oauth.authority.outage("down")
        failed: list[dict[str, Any]] = []
        mark = down
        for _ in range(2):  # two scheduled runs in the outage, each at the normal interval
            result = run_started_after(d, mark, INTERVAL + RUN)
            assert result["reason"] == "oauth_unavailable", f"{shown(result)}\n{tail(d)}"
            assert result["status"] == "critical" and result["stage"] in ("auth", "deliver")
            assert result["remedy"], shown(result)
            assert backoff(d) == 0, "oauth_unavailable is temporary: no back-off"
            failed.append(result)
            mark = _when(result["started_at"])
        gap = (_when(failed[1]["started_at"]) - _when(failed[0]["started_at"])).total_seconds()
        assert gap < INTERVAL + 2, f"runs {gap:.1f} s apart during the outage (interval {INTERVAL})"
        restored = _now()
        oauth.authority.restore()
        after = run_started_after(d, restored, INTERVAL + RUN)
        took = (_when(after["finished_at"]) - restored).total_seconds()
        assert after["success"] and after["reason"] == "ok", (
            f"first run after restore(): {shown(after)}\n{tail(d)}"
        )
        assert took <= INTERVAL + RUN, f"recovered only {took:.1f} s after restore()"
        assert backoff(d) == 0
