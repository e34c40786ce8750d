"""`relayprobe run` as a process against the real mail system: metrics, promtool, HTTP, reload, SIGTERM."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.daemon_helpers import (
    ROOT,
    TAG_SECRET,
    Daemon,
    http,
    parse,
    running_daemon,
    running_prometheus,
    start_daemon,
    stop,
    value,
    wait_for,
)
from tests.system.probe_configs import target_dict
from tests.system.test_alerts import (
    FIXTURE,
    RULES,
    exposed_metric_names,
    metric_names_in,
    names_from_exposition,
)
from tests.system.test_dashboard import DASHBOARD

pytestmark = pytest.mark.testbed

PROMTOOL = "/usr/bin/promtool"
CHROMIUM = "/usr/bin/chromium"
# The connector target's client certificate, next to the config file (relative paths in the config
# are taken from its directory): written by the daemon fixture, expiring within 21 days.
CLIENT_CERT, CLIENT_KEY = "connector-client.crt", "connector-client.key"
TARGETS = ("good", "broken", "badauth", "late", "connector")  # config_doc's


def write_client_cert(directory: Path, days: float) -> float:
    """A self-signed client certificate valid for ``days`` more days; returns its notAfter."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.probe.test")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    (directory / CLIENT_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / CLIENT_KEY).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return (now + dt.timedelta(days=days)).timestamp()


def config_doc(tb, instance: str, extra: list[dict] | None = None) -> dict:
    def target(name: str, **over) -> dict:
        t = target_dict(tb, name, **{"interval": "3s", "jitter": 0, **over})
        t["timeout"] = over.get("timeout", "10s")
        t["thresholds"] = {"warning": "5s", "critical": "8s"}
        return t

    late = target("late", rcpt_to="inbox+delay3@probe.test", interval="5s", timeout="1s")
    late["thresholds"] = {}
    badauth = target(
        "badauth",
        smtp={
            "auth": {
                "method": "password",
                "username": "probe@probe.test",
                "password": "wrong-password",
            }
        },
    )
    badauth["interval"] = "2s"
    # A certificate-based connector into the MX (no AUTH), run once per start and reload: its
    # client certificate expires within 21 days (relayprobe_client_cert_expiry_timestamp_seconds).
    connector = target(
        "connector",
        mode="connector",
        interval="1h",
        smtp={"port": tb.mx_port, "client_cert_file": CLIENT_CERT, "client_key_file": CLIENT_KEY},
    )
    connector["smtp"].pop("auth")
    connector["expect"], connector["thresholds"] = {"placement": "any"}, {}
    targets = [
        target("good"),
        target("broken", rcpt_to="inbox+reject@probe.test"),
        badauth,
        late,
        connector,
    ]
    return {
        "instance": instance,
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": targets + (extra or []),
    }


@pytest.fixture(scope="module")
def daemon(testbed, tmp_path_factory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("exporter")
    write_client_cert(tmp, 10)  # next to relayprobe.yml, which names it relatively
    instance = f"test-exp-{os.getpid()}-{int(time.time()) % 100000}"
    with running_daemon(
        testbed,
        tmp,
        config_doc(testbed, instance),
        "--shutdown.grace",
        "5",
        "--smtp.max-messages-per-minute",
        "300",
    ) as d:
        yield d


def test_every_target_has_series_from_start_up(daemon):
    m = daemon.metrics()
    for name in ("good", "broken", "badauth", "late"):
        assert value(m, "relayprobe_success", target=name) is not None, name
        assert value(m, "relayprobe_probe_interval_seconds", target=name) is not None
        assert value(m, "relayprobe_last_success_timestamp_seconds", target=name) is not None
    assert value(m, "relayprobe_probe_interval_seconds", target="badauth") == 2
    (info,) = [dict(labels) for (n, labels), v in m.items() if n == "relayprobe_build_info"]
    assert info["version"] == _version() and info["python"].count(".") == 2
    for name in ("good", "broken", "badauth", "late"):  # counters are born at 0, status unknown
        assert value(m, "relayprobe_failed_runs_total", target=name) is not None, name
    assert value(m, "relayprobe_status", target="late") in (0.0, 1.0, 2.0, 3.0)
    assert value(m, "relayprobe_config_last_reload_successful") == 1
    # From the configuration, before any run: how each side authenticates, the client certificate.
    auth = {
        (labels["target"], labels["side"]): labels
        for (n, key), v in m.items()
        if n == "relayprobe_auth_info" and v == 1
        for labels in [dict(key)]
    }
    assert set(auth) == {(t, side) for t in TARGETS for side in ("smtp", "imap")}
    assert auth[("good", "smtp")] == {
        "target": "good",
        "side": "smtp",
        "method": "password",
        "mode": "submission",
        "cloud": "global",
    }
    assert (auth[("connector", "smtp")]["method"], auth[("connector", "smtp")]["mode"]) == (
        "none",
        "connector",
    )
    assert auth[("connector", "imap")]["method"] == "password"
    expiry = value(m, "relayprobe_client_cert_expiry_timestamp_seconds", target="connector")
    assert time.time() + 9 * 86400 < expiry < time.time() + 21 * 86400
    assert value(m, "relayprobe_client_cert_expiry_timestamp_seconds", target="good") is None
    assert value(m, "relayprobe_imap_cert_expiry_timestamp_seconds", target="good") is not None


def _version() -> str:
    from probe import __version__

    return __version__


def test_good_target_succeeds_and_broken_one_fails_with_its_reason(daemon):
    def settled():
        m = daemon.metrics()
        rejected = value(
            m, "relayprobe_failures_total", target="broken", stage="submit", reason="smtp_rejected"
        )
        return m if value(m, "relayprobe_success", target="good") == 1 and rejected else None

    try:
        m = wait_for("good to succeed and broken to be rejected", settled, 40)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {http(daemon.url + '/api/results')[1]}") from None
    assert value(m, "relayprobe_success", target="broken") == 0
    assert value(m, "relayprobe_auth_result", target="good", method="dkim", result="pass") == 1
    assert value(m, "relayprobe_last_success_timestamp_seconds", target="good") > time.time() - 60
    assert value(m, "relayprobe_last_success_timestamp_seconds", target="broken") == 0
    assert value(m, "relayprobe_tls_cert_expiry_timestamp_seconds", target="good") > time.time()
    assert 0 < value(m, "relayprobe_phase_duration_seconds", target="good", phase="delivery") < 5
    # Label values are target names, stages, reasons, phases: never a mail address.
    assert "@" not in "".join(v for key in m for _, v in key[1])


def test_delivery_histogram_count_grows(daemon):
    def count() -> float:
        return (
            value(daemon.metrics(), "relayprobe_delivery_duration_seconds_count", target="good")
            or 0
        )

    first = wait_for("a first delivery", count)
    wait_for("a later delivery", lambda: count() > first, 15)
    m = daemon.metrics()
    inf = value(m, "relayprobe_delivery_duration_seconds_bucket", target="good", le="+Inf")
    assert inf == value(m, "relayprobe_delivery_duration_seconds_count", target="good")
    assert value(m, "relayprobe_delivery_duration_seconds_bucket", target="good", le="1800") == inf


def test_exposition_passes_promtool_check_metrics(daemon):
    status, body, headers = http(f"{daemon.url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # Cached results carry no sample timestamps: every sample line is "name{labels} value".
    samples = [ln for ln in body.splitlines() if ln and not ln.startswith("#")]
    assert all(len(ln.rsplit("} ", 1)[-1].split()) <= 2 for ln in samples)
    assert all(re.fullmatch(r"\S+(\{.*\})? \S+", ln) for ln in samples)
    assert "Cached from the last scheduled probe run" in body


def test_rules_and_dashboard_use_only_names_the_live_daemon_exposes(daemon, monkeypatch):
    # Issue #7: the names come from a live scrape after real probe runs, not from the fixture.
    def ran() -> bool:
        m = daemon.metrics()
        return all(
            (value(m, "relayprobe_runs_total", target=t) or 0) >= 1 for t in ("good", "broken")
        )

    wait_for("a finished run of good and broken", ran, 40)
    status, body, _ = http(f"{daemon.url}/metrics")
    assert status == 200, body
    live = names_from_exposition(body)  # sample names, plus every family declared by # TYPE
    for path in (RULES, DASHBOARD):
        used, where = metric_names_in(path.read_text()), os.path.relpath(path, ROOT)
        assert used, f"no relayprobe_ metric name found in {where}"
        assert used <= live, (
            f"{where} uses {sorted(used - live)}, which the daemon's "
            f"{daemon.url}/metrics does not expose: fix the name or expose the metric"
        )
    monkeypatch.delenv("RELAYPROBE_METRICS_SOURCE", raising=False)
    fixture = exposed_metric_names()  # now read from tests/fixtures/metric_names.txt
    assert fixture == live, (
        f"tests/fixtures/metric_names.txt is out of date: the daemon also exposes "
        f"{sorted(live - fixture)} and no longer {sorted(fixture - live)}"
    )
    families = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    lines = [ln.split() for ln in FIXTURE.read_text().splitlines() if ln and ln[0] != "#"]
    drift = set(families.items()) ^ {(name, kind) for name, kind in lines}
    assert not drift, f"family types differ from tests/fixtures/metric_names.txt: {sorted(drift)}"
    # The documented switch of test_alerts/test_dashboard to a live source reads the same set.
    monkeypatch.setenv("RELAYPROBE_METRICS_SOURCE", f"{daemon.url}/metrics")
    assert exposed_metric_names() == live


def test_configuration_failure_backs_off_visibly(daemon):
    def backing_off():
        m = daemon.metrics()
        return m if (value(m, "relayprobe_backoff_seconds", target="badauth") or 0) > 0 else None

    m = wait_for("badauth to back off", backing_off)
    failed = value(
        m, "relayprobe_failures_total", target="badauth", stage="auth", reason="auth_failed"
    )
    assert failed is not None and failed >= 1
    # interval 2 s; after n consecutive failures the next run waits interval * 2**n.
    assert value(m, "relayprobe_backoff_seconds", target="badauth") in (4, 8, 16, 32)
    lines = [e for e in daemon.logs() if e.get("target") == "badauth" and "backing off" in e["msg"]]
    assert lines and lines[0]["level"] == "warn" and lines[0]["reason"] == "auth_failed"
    fails = [e for e in daemon.logs() if e.get("target") == "broken" and e["level"] == "error"]
    assert any(e["stage"] == "submit" and e["reason"] == "smtp_rejected" for e in fails)
    assert all("RCPT TO" in e["msg"] for e in fails if e["reason"] == "smtp_rejected")


def test_repeated_rejection_backs_off_after_three_runs(daemon):
    # A 5xx that keeps coming back (mailbox full, blocked sender) would earn the sending mailbox
    # Microsoft's continuous-error throttling: after three in a row the target backs off too.
    def backing_off():
        m = daemon.metrics()
        return m if (value(m, "relayprobe_backoff_seconds", target="broken") or 0) > 0 else None

    m = wait_for("broken to back off after repeated rejections", backing_off, 40)
    rejected = value(
        m, "relayprobe_failures_total", target="broken", stage="submit", reason="smtp_rejected"
    )
    assert rejected is not None and rejected >= 3
    lines = [e for e in daemon.logs() if e.get("target") == "broken" and "backing off" in e["msg"]]
    assert lines and "repeated rejection" in lines[0]["msg"]
    assert lines[0]["reason"] == "smtp_rejected"


def test_late_arrival_is_counted_and_removed(daemon):
    def late():
        m = daemon.metrics()
        return (value(m, "relayprobe_late_deliveries_total", target="late") or 0) >= 1

    wait_for("the delayed probe to arrive late", late, 20)
    m = daemon.metrics()
    timeouts = value(
        m, "relayprobe_failures_total", target="late", stage="deliver", reason="delivery_timeout"
    )
    assert timeouts is not None and timeouts >= 1


def test_one_imap_connection_per_folder_shared_by_all_targets(daemon):
    # Four targets deliver into inbox@probe.test: one watch, two folders (INBOX, Junk Email).
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", "dport", "=", ":10993"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mine = [ln for ln in out.splitlines() if f"pid={daemon.proc.pid}," in ln]
    assert len(mine) == 2, out


def test_probe_endpoint_runs_one_target_and_is_rate_limited(daemon):
    status, body, _ = http(f"{daemon.url}/probe?target=good")
    assert status == 200, body
    m = parse(body)
    assert value(m, "relayprobe_success", target="good") == 1
    assert not any(key[1] and dict(key[1]).get("target") == "broken" for key in m)
    assert "relayprobe_build_info" not in body  # exporter self-metrics only on /metrics
    status, body, headers = http(f"{daemon.url}/probe?target=good")
    # Refused either for the on-demand gap or because the scheduled run is busy right now.
    assert status == 429 and ("retry in" in body or "right now" in body), body
    assert headers.get("Retry-After")
    status, body, _ = http(f"{daemon.url}/probe?target=nope")
    assert status == 400 and "configured: good, broken" in body
    assert http(f"{daemon.url}/probe")[0] == 400


def test_api_results_has_the_result_contract(daemon):
    status, body, _ = http(f"{daemon.url}/api/results")
    assert status == 200
    results = {r["target"]: r for r in json.loads(body)["results"]}
    good = results["good"]
    assert good["success"] is True and good["stage"] == "done" and good["reason"] == "ok"
    assert good["arrival"]["placement"] == "inbox" and good["finished_at"].endswith("Z")
    assert {"timings", "smtp", "auth", "spam", "message", "started_at"} <= set(good)
    assert results["broken"]["reason"] == "smtp_rejected" and results["broken"]["message"]


def test_landing_page_shows_a_row_per_target(daemon):
    status, body, _ = http(f"{daemon.url}/")
    assert status == 200
    for name in ("good", "broken", "badauth", "late"):
        assert f'data-name="{name}"' in body
    # "Probe now" is a POST form (tests/system/test_status_page.py); /probe stays for Prometheus.
    assert 'href="metrics"' in body and '<form method="post" action="target/good/probe">' in body
    assert "smtp_rejected" in body and "RCPT TO" in body  # the broken target's last error
    assert http(f"{daemon.url}/-/healthy")[0] == 200
    assert http(f"{daemon.url}/-/reload")[0] == 405  # POST only


def test_good_reload_is_applied(daemon):
    extra = target_dict(daemon.tb, "extra", interval="3s", jitter=0, timeout="10s")
    extra["thresholds"] = {}
    daemon.write_config(config_doc(daemon.tb, daemon.instance, [extra]))
    # A renewed client certificate (still within 21 days) is read again at the reload.
    renewed = write_client_cert(daemon.config.parent, 15)
    status, body, _ = http(f"{daemon.url}/-/reload", method="POST")
    assert (status, body) == (200, "config reloaded\n")
    expiry = value(
        daemon.metrics(), "relayprobe_client_cert_expiry_timestamp_seconds", target="connector"
    )
    assert expiry == renewed
    wait_for(
        "the new target to run",
        lambda: value(daemon.metrics(), "relayprobe_success", target="extra") == 1,
    )
    assert value(daemon.metrics(), "relayprobe_config_last_reload_successful") == 1


def test_bad_reload_is_rejected_and_probes_keep_running(daemon):
    doc = config_doc(daemon.tb, daemon.instance)
    doc["targets"][0]["smtp"]["tls_mode"] = "starttls"  # unknown key
    daemon.write_config(doc)
    status, body, _ = http(f"{daemon.url}/-/reload", method="POST")
    assert status == 500 and "targets[0].smtp.tls_mode: unknown key" in body
    m = daemon.metrics()
    assert value(m, "relayprobe_config_last_reload_successful") == 0
    assert value(m, "relayprobe_success", target="extra") is not None  # old config still on
    runs = value(m, "relayprobe_runs_total", target="good")
    wait_for(
        "good to keep running",
        lambda: value(daemon.metrics(), "relayprobe_runs_total", target="good") > runs,
        15,
    )
    assert http(f"{daemon.url}/-/ready")[0] == 200
    # SIGHUP reloads too: the fixed file is taken and the flag goes back to 1.
    daemon.write_config(config_doc(daemon.tb, daemon.instance))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(
        "SIGHUP reload",
        lambda: value(daemon.metrics(), "relayprobe_config_last_reload_successful") == 1,
    )
    wait_for(
        "the removed target to vanish",
        lambda: value(daemon.metrics(), "relayprobe_success", target="extra") is None,
    )


def test_prometheus_scrapes_the_daemon(daemon, tmp_path):
    target = daemon.url.removeprefix("http://")
    with running_prometheus(tmp_path, [target], job="relayprobe", rules=RULES) as prom:
        query = urllib.parse.quote('relayprobe_success{job="relayprobe",target="good"}')

        def answer():
            try:
                status, body, _ = http(f"{prom.url}/api/v1/query?query={query}", timeout=2)
            except (urllib.error.URLError, OSError):
                return None
            result = json.loads(body)["data"]["result"] if status == 200 else []
            return result[0] if result and result[0]["value"][1] == "1" else None

        try:
            got = wait_for("Prometheus to return relayprobe_success 1", answer, 30)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; daemon results: {http(daemon.url + '/api/results')[1]}"
            ) from None
        assert got["metric"]["instance"] == target and got["value"][1] == "1"

        # The shipped rules on the live series: the connector's client certificate expires within
        # 21 days; the password submission targets send with basic auth, the connector does not.
        def firing() -> set[tuple[str, str]] | None:
            status, body, _ = http(f"{prom.url}/api/v1/alerts", timeout=2)
            alerts = json.loads(body)["data"]["alerts"] if status == 200 else []
            got = {
                (a["labels"]["alertname"], a["labels"].get("target", ""))
                for a in alerts
                if a["state"] == "firing"
            }
            return got if ("RelayProbeClientCertExpiring", "connector") in got else None

        alerts = wait_for("RelayProbeClientCertExpiring for the connector target", firing, 30)
        assert ("RelayProbeBasicAuthInUse", "good") in alerts
        assert ("RelayProbeBasicAuthInUse", "connector") not in alerts
        assert ("RelayProbeClientCertExpiring", "good") not in alerts


def test_status_page_renders_in_headless_chromium(daemon, tmp_path):
    # The screenshot is an artefact for people, kept out of git: RELAYPROBE_ARTIFACTS or tmp.
    out = Path(os.environ.get("RELAYPROBE_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "status-page.png"
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1600,700",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", f"{daemon.url}/"], capture_output=True, text=True, timeout=60
    ).stdout
    rows = re.findall(r'<article class="target state-(\w+)" id="target-([^"]+)"', dom)
    assert {name for _, name in rows} == set(TARGETS), dom[:2000]
    assert ("ok", "good") in rows and ("critical", "broken") in rows
    subprocess.run(
        [*base, f"--screenshot={shot}", f"{daemon.url}/"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")


async def test_start_up_sweep_counts_and_removes_stale_probe_mail(testbed, tmp_path):
    import imapclient

    from probe.message import build_message
    from probe.smtp.submission import send_probe
    from probe.tag import make_tag
    from tests.system.probe_configs import make_config

    instance = f"test-sweep-{os.getpid()}-{int(time.time()) % 100000}"
    config = make_config(testbed, target_dict(testbed, "good"), instance=instance)
    target = config.targets[0]
    # A probe mail of this instance that nobody waits for: left over from an earlier run.
    tag = make_tag(TAG_SECRET.encode(), instance=instance, target="good")
    message = build_message(tag=tag, mail_from=target.mail_from, rcpt_to=target.rcpt_to)
    await send_probe(
        target.smtp, mail_from=target.mail_from, rcpt_to=target.rcpt_to, message=message
    )
    ctx = ssl.create_default_context(cafile=str(testbed.ca_file))

    def stale_count() -> int:
        with imapclient.IMAPClient(
            testbed.host, port=testbed.imap_tls_port, ssl_context=ctx, timeout=10
        ) as imap:
            imap.login("inbox@probe.test", testbed.users["inbox@probe.test"])
            imap.select_folder("INBOX", readonly=True)
            return len(imap.search(["SUBJECT", tag.probe_id]))

    await asyncio.to_thread(wait_for, "the stale probe mail to land", stale_count, 20)
    doc = config_doc(testbed, instance)
    doc["targets"] = [t for t in doc["targets"] if t["name"] == "good"]
    doc["targets"][0]["interval"] = "1h"  # one run at start-up: the watch starts, and sweeps
    d = start_daemon(testbed, tmp_path, doc)
    try:

        def swept() -> bool:
            try:
                m = d.metrics()
            except OSError:
                return False
            return value(m, "relayprobe_late_deliveries_total", target="good") == 1

        await asyncio.to_thread(wait_for, "the sweep to count the stale mail", swept, 20)
        assert await asyncio.to_thread(stale_count) == 0
    finally:
        assert stop(d.proc) == 0


def test_sigterm_stops_gracefully_with_exit_0(daemon):
    started = time.monotonic()
    assert stop(daemon.proc) == 0
    assert time.monotonic() - started < 10  # --shutdown.grace 5 bounds in-flight probes
    msgs = [e["msg"] for e in daemon.logs()]
    assert msgs[-1] == "stopped"
    errors = [e["msg"] for e in daemon.logs() if e["level"] == "error"]
    unexpected = [m for m in errors if not m.startswith(("probe failed", "reload rejected"))]
    assert unexpected == [] and "Traceback" not in daemon.log.read_text()
    assert TAG_SECRET not in daemon.log.read_text()
    assert daemon.tb.users["probe@probe.test"] not in daemon.log.read_text()
