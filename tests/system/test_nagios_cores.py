"""Shipped Icinga 2 / Nagios 4 / NRPE definitions in the real cores: validation and real check runs.

The example services run as shipped beside a real relayprobe daemon on the local mail system; the
only change is the daemon's URL (the test daemon listens on a free port, not on 9833).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporters.daemon import DEFAULT_PORT
from nagios.argspec import build_parser
from tests.system.daemon_helpers import Daemon, running_daemon, wait_for
from tests.system.probe_configs import target_dict
from tests.system.test_nagios_cli import PLUGIN, SECRET, Exporter, exporter  # noqa: F401 - fixture
from tests.unit.test_nagios_output import delivered

ROOT = Path(__file__).resolve().parents[2]
ICINGA_DIR = ROOT / "nagios" / "icinga2"
ICINGA_CONF = ICINGA_DIR / "relayprobe-commands.conf"
ICINGA_SERVICES = ICINGA_DIR / "relayprobe-services.conf"
ICINGA_ROUNDTRIP = ICINGA_DIR / "relayprobe-roundtrip.conf"
NAGIOS_DIR = ROOT / "nagios" / "nagios4"
NRPE_CONF = ROOT / "nagios" / "nrpe" / "relayprobe.cfg"
# Where the shipped examples expect the daemon: its default listen address on the same host.
SHIPPED_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
# The target the shipped passive examples read, and their thresholds.
SHIPPED_TARGET = "m365-submission"
# The cores run plugins with an environment of their own: start them with a minimal one too.
CORE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@pytest.fixture(autouse=True)
def _cores_installed() -> None:
    # A missing core is a broken setup, not a reason to skip: tests/run.sh installs them.
    missing = [
        b for b in ("icinga2", "nagios4", "nrpe") if not shutil.which(b, path=CORE_ENV["PATH"])
    ]
    if missing:
        pytest.fail(f"{missing} not installed: run tests/tools/install-monitoring.sh")


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Short paths: Nagios crashes on a query-socket path of ~130 bytes (deep pytest tmp paths).
    path = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The real relayprobe daemon probing the mail system under the shipped examples' target name.

    It probes once at start-up (interval 1h), so every core reads one finished result.
    """
    target = target_dict(testbed, SHIPPED_TARGET, interval="1h", jitter=0, timeout="15s")
    doc = {
        "instance": f"test-nagios-cores-{os.getpid()}-{time.monotonic_ns() % 10**6}",
        "tag_secret": "${TB_TAG_SECRET}",
        "targets": [target],
    }
    with running_daemon(testbed, tmp_path_factory.mktemp("nagios-cores"), doc) as d:
        yield d


def daemon_result(daemon: Daemon) -> dict[str, Any]:
    """The daemon's finished result for the shipped target (waits for its first run)."""
    try:
        found = wait_for("the daemon's first result", lambda: daemon.results().get(SHIPPED_TARGET))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; daemon log: {daemon.log.read_text()[-2000:]}") from None
    result: dict[str, Any] = found  # type: ignore[assignment]
    assert result["success"] and result["timings"]["delivery_seconds"] is not None, result
    return result


def as_shipped(path: Path, daemon: Daemon) -> str:
    """The shipped file's text, with only the daemon's URL replaced by the test daemon's."""
    text = path.read_text()
    assert SHIPPED_URL in text, f"{path.name} should name {SHIPPED_URL}"
    return text.replace(SHIPPED_URL, daemon.url)


def expected_perfdata(result: dict[str, Any], warning: str, critical: str) -> str:
    """The perfdata the plugin renders for the daemon's result (a regex: the age moves on)."""
    t = result["timings"]
    phases = " ".join(
        f"{p}={round(t[p + '_seconds'], 3)}s;;;0"
        for p in ("smtp_connect", "smtp_tls", "smtp_auth", "smtp_submit", "total")
    )
    delivery = round(t["delivery_seconds"], 3)
    return re.escape(f"delivery={delivery}s;{warning};{critical};0 {phases} ") + r"age=\d+s;;;0"


# --- Icinga 2 ---------------------------------------------------------------------------------


def icinga_conf(scratch: Path, services: str, *, host: bool = True) -> Path:
    """icinga2.conf with the ITL, the shipped CheckCommand, `services` and (host) a Host "relay"."""
    for sub in ("cache", "data", "log", "run", "spool"):
        (scratch / sub).mkdir(exist_ok=True)
    conf = scratch / "icinga2.conf"
    relay = 'object Host "relay" { check_command = "dummy"; address = "127.0.0.1" }\n'
    conf.write_text(
        f'const PluginContribDir = "{Path(PLUGIN).parent}"\n'
        'const NodeName = "relayprobe-test"\nconst ZoneName = "relayprobe-test"\n'
        f'include <itl>\ninclude "{ICINGA_CONF}"\n' + (relay if host else "") + services
    )
    return conf


def icinga(conf: Path, *args: str, scratch: Path) -> list[str]:
    dirs = {
        "CacheDir": "cache",
        "DataDir": "data",
        "LogDir": "log",
        "InitRunDir": "run",
        "SpoolDir": "spool",
    }
    defines = [f"-D{k}={scratch / v}" for k, v in dirs.items()]
    return ["icinga2", *args, "-c", str(conf), *defines, "-DRunAsUser=root", "-DRunAsGroup=root"]


def test_icinga2_validates_the_shipped_files(scratch: Path) -> None:
    conf = icinga_conf(
        scratch, f'include "{ICINGA_SERVICES}"\ninclude "{ICINGA_ROUNDTRIP}"\n', host=False
    )
    proc = subprocess.run(
        icinga(conf, "daemon", "-C", scratch=scratch),
        capture_output=True,
        text=True,
        env=CORE_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Instantiated 3 Services." in proc.stdout
    assert "Finished validating the configuration file(s)." in proc.stdout


def test_icinga2_validation_catches_a_broken_definition(scratch: Path) -> None:
    broken = ICINGA_SERVICES.read_text().replace(
        'check_command = "m365_relay"', 'check_command = "m365_relayy"'
    )
    conf = icinga_conf(scratch, broken, host=False)
    proc = subprocess.run(
        icinga(conf, "daemon", "-C", scratch=scratch),
        capture_output=True,
        text=True,
        env=CORE_ENV,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "m365_relayy" in proc.stdout


def test_default_examples_are_passive_and_round_trips_have_configs_of_their_own() -> None:
    # The default services read the daemon at its default address; they send no mail.
    for path in (ICINGA_SERVICES, NAGIOS_DIR / "services.cfg"):
        text = path.read_text()
        assert SHIPPED_URL in text, path.name
        assert not re.search(r"m365_relay_(config|host)\b|check_m365_relay_(config|quick)", text)
    # Active round trips live in their own files, each on a config that is not the daemon's.
    nagios_roundtrip = (NAGIOS_DIR / "services-roundtrip.cfg").read_text()
    configs = [
        *re.findall(r'm365_relay_config = "([^"]+)"', ICINGA_ROUNDTRIP.read_text()),
        *re.findall(r"check_m365_relay_config!([^!]+)!", nagios_roundtrip),
        *re.findall(r"--config (\S+)", NRPE_CONF.read_text()),
    ]
    assert len(configs) == 3 and len(set(configs)) == 3, configs
    daemon_configs = {"/etc/relayprobe/relayprobe.yaml", "/etc/relayprobe/config.yml"}
    assert all("roundtrip" in c and c not in daemon_configs for c in configs), configs
    nrpe_default = re.search(r"^command\[check_m365_relay\]=(.*)$", NRPE_CONF.read_text(), re.M)
    assert nrpe_default and f"--from-exporter {SHIPPED_URL} " in nrpe_default[1]


def test_icinga2_command_covers_every_plugin_option_with_a_description() -> None:
    text = ICINGA_CONF.read_text()
    arguments = dict(re.findall(r'"(--[a-z-]+)" = \{(.*?)\n    \}', text, re.S))
    options = {
        s
        for a in build_parser()._actions
        for s in a.option_strings
        if s.startswith("--") and a.help != "==SUPPRESS=="
    }
    # Not arguments: help/version, and the *-env options (Icinga sets the default variables).
    ignored = {
        "--help",
        "--version",
        "--password-env",
        "--imap-password-env",
        "--exporter-password-env",
    }
    assert set(arguments) == options - ignored
    assert all("description = " in body for body in arguments.values())
    assert all(re.search(r'value = "\$m365_relay_\w+\$"|set_if', b) for b in arguments.values())
    assert "--password" not in arguments
    for var in ("SMTP", "IMAP", "EXPORTER"):
        assert f'env.RELAYPROBE_{var}_PASSWORD = "$m365_relay_env_{var.lower()}_password$"' in text


def test_imap_security_offers_only_encrypted_imap_and_refuses_none_as_a_usage_error() -> None:
    # relayprobe never logs in to IMAP in the clear: "none" is neither offered nor described.
    (action,) = [a for a in build_parser()._actions if "--imap-security" in a.option_strings]
    assert tuple(action.choices or ()) == ("starttls", "tls")
    body = re.search(r'"--imap-security" = \{(.*?)\n    \}', ICINGA_CONF.read_text(), re.S)
    assert body and "none" not in body[1].replace("plain IMAP is refused", "")
    quick = ["-H", "smtp.example.com", "--rcpt-to", "inbox@example.com", "--imap-host", "imap"]
    proc = subprocess.run(
        [PLUGIN, *quick, "--imap-security", "none"],
        capture_output=True,
        text=True,
        env=CORE_ENV,
        timeout=30,
    )
    assert proc.returncode == 3
    assert proc.stdout.splitlines()[0] == (
        "M365 RELAY UNKNOWN - invalid options: argument --imap-security: IMAP without TLS is"
        " refused (the login would cross the network in the clear): use starttls or tls"
    )


def netstrings(data: bytes) -> Iterator[dict]:
    """Icinga's state file: a sequence of netstrings ("<length>:<json>,")."""
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        yield json.loads(data[colon + 1 : colon + 1 + length])
        pos = colon + 1 + length + 1


def icinga_state(scratch: Path, name: str) -> dict[str, Any]:
    """The last check result Icinga recorded for `name` (host!service) in its state file."""
    state: dict[str, Any] = {}
    for item in netstrings((scratch / "data" / "icinga2.state").read_bytes()):
        if item.get("name") == name:
            state = item["update"].get("last_check_result") or {}
    return state


def test_icinga2_core_runs_the_shipped_service_beside_the_daemon(
    scratch: Path, daemon: Daemon
) -> None:
    result = daemon_result(daemon)
    # The shipped host and service, unchanged but for the URL; the test adds the checker, the
    # external command pipe (to run the 1-minute check now) and a debug log (to see it finish).
    services = as_shipped(ICINGA_SERVICES, daemon)
    (scratch / "relayprobe-services.conf").write_text(services)
    pipe, debug = scratch / "run" / "icinga2.cmd", scratch / "log" / "debug.log"
    conf = icinga_conf(
        scratch,
        f'include "{scratch / "relayprobe-services.conf"}"\n'
        'object CheckerComponent "checker" { }\n'
        f'object ExternalCommandListener "command" {{ command_path = "{pipe}" }}\n'
        f'object FileLogger "debug" {{ path = "{debug}"; severity = "debug" }}\n',
        host=False,
    )
    core = subprocess.Popen(
        icinga(conf, "daemon", scratch=scratch),
        env=CORE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    finished = "Check finished for object 'smtp.office365.com!m365-relay'"
    try:
        wait_for("Icinga's command pipe", pipe.is_fifo, 20)
        now = int(time.time())
        command = f"[{now}] SCHEDULE_FORCED_SVC_CHECK;smtp.office365.com;m365-relay;{now}\n"
        # Opening the pipe blocks while Icinga is down: write from a process with a timeout.
        subprocess.run(
            ["sh", "-c", f"cat > '{pipe}'"], input=command, text=True, timeout=5, check=True
        )
        wait_for("the check", lambda: debug.exists() and finished in debug.read_text(), 20)
    finally:
        core.send_signal(signal.SIGTERM)  # Icinga dumps its state file on the way out
        core.wait(timeout=30)
    state = icinga_state(scratch, "smtp.office365.com!m365-relay")
    assert (state["exit_status"], state["state"]) == (0, 0), state["output"]
    # Icinga keeps the space before "|"; perfdata labels arrive split into a list.
    first, long_output = state["output"].split("\n", 1)
    assert first.startswith(f"M365 RELAY OK - {SHIPPED_TARGET}: delivered to INBOX in "), first
    # The core shows exactly the daemon's run: its timings, the shipped thresholds, a fresh age.
    perfdata = " ".join(state["performance_data"])
    assert re.fullmatch(expected_perfdata(result, "60", "300"), perfdata), perfdata
    assert "\\_[OK] result: " in long_output, long_output
    assert f"(max 900s) from {daemon.url}/api/results" in long_output
    assert state["command"][0] == str(Path(PLUGIN).parent / "check_m365_relay")
    assert state["command"][1:] == [
        "--critical", "300", "--from-exporter", daemon.url, "--max-age", "900",
        "--target", SHIPPED_TARGET, "--warning", "60",
    ]  # fmt: skip


def test_icinga2_passes_the_exporter_password_in_the_environment(
    scratch: Path,
    exporter: Exporter,  # noqa: F811 - pytest fixture
) -> None:
    # The stand-in serves an exact result behind basic auth: the whole recorded output compares.
    exporter.publish(delivered(), dt.datetime.now(dt.UTC))
    exporter.auth = "Basic " + __import__("base64").b64encode(f"icinga:{SECRET}".encode()).decode()
    conf = icinga_conf(
        scratch,
        f"""
object CheckerComponent "checker" {{ }}
object Service "m365-relay" {{
  host_name = "relay"
  check_command = "m365_relay"
  check_interval = 1s
  retry_interval = 1s
  vars.m365_relay_from_exporter = "{exporter.url}"
  vars.m365_relay_target = "m365-submission"
  vars.m365_relay_warning = "10"
  vars.m365_relay_critical = "300"
  vars.m365_relay_exporter_username = "icinga"
  vars.m365_relay_env_exporter_password = "{SECRET}"
}}
""",
    )
    core = subprocess.Popen(
        icinga(conf, "daemon", scratch=scratch),
        env=CORE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        # Two requests: the first check's result has been processed by the time of the second.
        while len(exporter.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        core.send_signal(signal.SIGTERM)  # Icinga dumps its state file on the way out
        core.wait(timeout=30)
    assert len(exporter.requests) >= 2, "Icinga did not run the check within 20 s"
    state = icinga_state(scratch, "relay!m365-relay")
    assert state["exit_status"] == 1 and state["state"] == 1
    # Icinga keeps the space before "|"; perfdata labels arrive split into a list.
    assert state["output"].split("\n")[0] == (
        "M365 RELAY WARNING - m365-submission: delivery took 12.4s, outside range 0:10 "
    )
    assert state["performance_data"] == [
        "delivery=12.4s;10;300;0",
        "smtp_connect=0.012s;;;0",
        "smtp_tls=0.034s;;;0",
        "smtp_auth=0.101s;;;0",
        "smtp_submit=0.245s;;;0",
        "total=12.8s;;;0",
        "scl=1;;;-1;9",
        state["performance_data"][-1],
    ]
    assert re.fullmatch(r"age=\d+s;;;0", state["performance_data"][-1])
    # The password went through the environment: not in the command line Icinga records.
    assert SECRET not in json.dumps(state["command"])
    assert state["command"][0] == str(Path(PLUGIN).parent / "check_m365_relay")


# --- Nagios 4 ---------------------------------------------------------------------------------


def nagios_cfg(scratch: Path, *object_files: Path) -> Path:
    (scratch / "var").mkdir(exist_ok=True)
    (scratch / "cr").mkdir(exist_ok=True)
    (scratch / "resource.cfg").write_text(f"$USER1$={Path(PLUGIN).parent}\n")
    debian = Path("/etc/nagios4/objects")
    # Debian's sample objects: the templates, contacts and notification commands the examples use.
    files = [
        debian / f for f in ("templates.cfg", "timeperiods.cfg", "contacts.cfg", "commands.cfg")
    ]
    files += [NAGIOS_DIR / "commands.cfg", *object_files]
    v = scratch / "var"
    cfg = scratch / "nagios.cfg"
    cfg.write_text(
        "\n".join(
            [
                *(f"cfg_file={f}" for f in files),
                f"resource_file={scratch / 'resource.cfg'}",
                f"log_file={v / 'nagios.log'}",
                f"object_cache_file={v / 'objects.cache'}",
                f"precached_object_file={v / 'objects.pre'}",
                f"status_file={v / 'status.dat'}",
                "status_update_interval=1",
                "nagios_user=root",
                "nagios_group=root",
                "check_external_commands=1",
                f"command_file={v / 'nagios.cmd'}",
                f"lock_file={v / 'nagios.lock'}",
                f"temp_file={v / 'nagios.tmp'}",
                f"temp_path={v}",
                f"check_result_path={scratch / 'cr'}",
                f"query_socket={v / 'q.sock'}",
                "retain_state_information=0",
                "use_syslog=0",
                "check_for_updates=0",
                "enable_notifications=0",
                # The example host is smtp.office365.com: never check it from a test.
                "execute_host_checks=0",
                "illegal_macro_output_chars=`~$&|'\"<>",
            ]
        )
        + "\n"
    )
    return cfg


def test_nagios4_validates_the_shipped_examples(scratch: Path) -> None:
    for files, services in (
        ([NAGIOS_DIR / "services.cfg"], 1),
        ([NAGIOS_DIR / "services.cfg", NAGIOS_DIR / "services-roundtrip.cfg"], 3),
    ):
        cfg = nagios_cfg(scratch, *files)
        proc = subprocess.run(
            ["nagios4", "-v", str(cfg)], capture_output=True, text=True, env=CORE_ENV, timeout=60
        )
        assert proc.returncode == 0, proc.stdout
        assert f"Checked {services} services." in proc.stdout
        assert "Total Errors:   0" in proc.stdout and "Total Warnings: 0" in proc.stdout


def test_nagios4_core_runs_the_shipped_service_beside_the_daemon(
    scratch: Path, daemon: Daemon
) -> None:
    result = daemon_result(daemon)
    services = scratch / "services.cfg"
    services.write_text(as_shipped(NAGIOS_DIR / "services.cfg", daemon))
    cfg = nagios_cfg(scratch, services)
    subprocess.run(["nagios4", "-d", str(cfg)], env=CORE_ENV, check=True, timeout=30)
    var = scratch / "var"
    try:
        deadline = time.monotonic() + 10
        while not (var / "nagios.cmd").is_fifo() and time.monotonic() < deadline:
            time.sleep(0.05)
        now = int(time.time())
        command = f"[{now}] SCHEDULE_FORCED_SVC_CHECK;smtp.office365.com;M365 relay;{now}\n"
        # Opening the pipe blocks while Nagios is down: write from a process with a timeout.
        subprocess.run(
            ["sh", "-c", f"cat > '{var / 'nagios.cmd'}'"],
            input=command,
            text=True,
            timeout=5,
            check=True,
        )
        status = ""
        while "plugin_output=M365" not in status and time.monotonic() < deadline + 10:
            time.sleep(0.1)
            status = (var / "status.dat").read_text() if (var / "status.dat").exists() else ""
    finally:
        pid = int((var / "nagios.lock").read_text().strip())
        os.kill(pid, signal.SIGTERM)
    block = status[status.index("servicestatus {") :]
    fields = dict(re.findall(r"^\t(\w+)=(.*)$", block[: block.index("\n\t}")], re.M))
    assert (fields["host_name"], fields["service_description"]) == (
        "smtp.office365.com",
        "M365 relay",
    )
    assert fields["current_state"] == "0", fields["plugin_output"]
    assert fields["plugin_output"].startswith(
        f"M365 RELAY OK - {SHIPPED_TARGET}: delivered to INBOX in "
    )
    assert re.fullmatch(expected_perfdata(result, "60", "300"), fields["performance_data"])
    assert fields["long_plugin_output"].startswith("\\\\_[OK] SMTP 127.0.0.1:")
    assert f"(max 900s) from {daemon.url}/api/results" in fields["long_plugin_output"]


# --- NRPE -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_for_nagios_user(scratch: Path) -> str:
    """Install the plugin where NRPE's user can run it; return its path.

    NRPE refuses to run as root, and this checkout's venv interpreter may sit under /root
    (mode 700), out of the nagios user's reach. Like an operator would, install the plugin
    under a world-readable prefix: the packages passive mode imports plus a check_m365_relay
    launcher run by the system Python 3.
    """
    import nagiosplugin

    lib = scratch / "lib"
    for package in (ROOT / "nagios", ROOT / "probe", Path(nagiosplugin.__file__).parent):
        shutil.copytree(package, lib / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    launcher = scratch / "check_m365_relay"
    launcher.write_text(
        "#!/usr/bin/python3\nimport sys\n"
        f"sys.path.insert(0, {str(lib)!r})\nfrom nagios.check import main\nmain()\n"
    )
    launcher.chmod(0o755)
    for path in (scratch, *scratch.rglob("*")):
        path.chmod(path.stat().st_mode | 0o055 | (0o011 if path.is_dir() else 0))
    return str(launcher)


def test_nrpe_serves_the_shipped_snippet_beside_the_daemon(scratch: Path, daemon: Daemon) -> None:
    # The nagios user cannot reach the venv under /root: the plugin runs on Debian's python3.
    assert Path("/usr/bin/python3").exists(), "Debian's /usr/bin/python3 is missing"
    result = daemon_result(daemon)
    plugin = install_for_nagios_user(scratch)
    # The snippet as shipped, pointed at the installed plugin and the test daemon's port.
    snippet = as_shipped(NRPE_CONF, daemon)
    snippet = snippet.replace("/usr/lib/nagios/plugins/check_m365_relay", plugin)
    (scratch / "relayprobe.cfg").write_text(snippet)
    port = free_port()
    (scratch / "nrpe.cfg").write_text(
        f"pid_file={scratch / 'nrpe.pid'}\nserver_port={port}\nserver_address=127.0.0.1\n"
        "nrpe_user=nagios\nnrpe_group=nagios\nallowed_hosts=127.0.0.1\ndont_blame_nrpe=0\n"
        f"command_timeout=60\ninclude={scratch / 'relayprobe.cfg'}\n"
    )
    nrpe = subprocess.Popen(
        ["nrpe", "-f", "-c", str(scratch / "nrpe.cfg")],
        env=CORE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        proc = subprocess.run(
            [
                "/usr/lib/nagios/plugins/check_nrpe",
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
                "-c",
                "check_m365_relay",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        nrpe.terminate()
        nrpe.wait(timeout=10)
    assert proc.returncode == 0, proc.stdout
    first, rest = proc.stdout.split("\n", 1)
    summary, perfdata = first.split(" | ")
    assert summary.startswith(f"M365 RELAY OK - {SHIPPED_TARGET}: delivered to INBOX in ")
    assert re.fullmatch(expected_perfdata(result, "60", "300"), perfdata), perfdata
    assert f"(max 900s) from {daemon.url}/api/results" in rest


# --- end to end: a real core runs a real round trip against the local mail system -----------


@pytest.mark.testbed
def test_icinga2_core_runs_a_round_trip_against_the_mail_system(
    scratch: Path,
    testbed: Any,
) -> None:
    # The password reaches the plugin through the CheckCommand's env, from a custom variable.
    conf = icinga_conf(
        scratch,
        f"""
object CheckerComponent "checker" {{ }}
object Service "m365-relay-roundtrip" {{
  host_name = "relay"
  check_command = "m365_relay"
  check_interval = 1s
  retry_interval = 1s
  vars.m365_relay_host = "{testbed.host}"
  vars.m365_relay_port = {testbed.submission_port}
  vars.m365_relay_ca_file = "{testbed.ca_file}"
  vars.m365_relay_username = "probe@probe.test"
  vars.m365_relay_env_smtp_password = "{testbed.users["probe@probe.test"]}"
  vars.m365_relay_rcpt_to = "inbox@probe.test"
  vars.m365_relay_imap_host = "{testbed.host}"
  vars.m365_relay_imap_port = {testbed.imap_tls_port}
  vars.m365_relay_env_imap_password = "{testbed.users["inbox@probe.test"]}"
  vars.m365_relay_target = "testbed"
  vars.m365_relay_delivery_timeout = 20
  vars.m365_relay_warning = "5"
  vars.m365_relay_critical = "10"
  vars.m365_relay_expect_dmarc = "pass"
}}
""",
    )
    daemon = subprocess.Popen(
        icinga(conf, "daemon", scratch=scratch),
        env=CORE_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # a round trip here takes ~0.5 s; Icinga repeats it every second
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    state = {}
    for item in netstrings((scratch / "data" / "icinga2.state").read_bytes()):
        if item.get("name") == "relay!m365-relay-roundtrip":
            state = item["update"].get("last_check_result") or {}
    assert state, "Icinga recorded no check result within 5 s"
    assert (state["exit_status"], state["state"]) == (0, 0), state["output"]
    assert state["output"].startswith("M365 RELAY OK - testbed: delivered to INBOX in ")
    perf = state["performance_data"]
    assert [p.split("=")[0] for p in perf] == [
        "delivery",
        "smtp_connect",
        "smtp_tls",
        "smtp_auth",
        "smtp_submit",
        "total",
    ]
    assert re.fullmatch(r"delivery=[\d.]+s;5;10;0", perf[0])
    assert "authentication: spf=pass dkim=pass dmarc=pass" in state["output"]
    # Secrets travelled in the environment, never in the command line Icinga records.
    command = json.dumps(state["command"])
    assert testbed.users["probe@probe.test"] not in command
    assert testbed.users["inbox@probe.test"] not in command
