"""Shipped Icinga 2 / Nagios 4 / NRPE definitions in the real cores: validation and a real check run."""

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

from nagios.argspec import build_parser
from tests.system.test_nagios_cli import PLUGIN, SECRET, Exporter, exporter  # noqa: F401 - fixture
from tests.unit.test_nagios_output import delivered

ROOT = Path(__file__).resolve().parents[2]
ICINGA_CONF = ROOT / "nagios" / "icinga2" / "relayprobe-commands.conf"
NAGIOS_DIR = ROOT / "nagios" / "nagios4"
NRPE_CONF = ROOT / "nagios" / "nrpe" / "relayprobe.cfg"
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


# --- Icinga 2 ---------------------------------------------------------------------------------


def icinga_conf(scratch: Path, services: str) -> Path:
    for sub in ("cache", "data", "log", "run", "spool"):
        (scratch / sub).mkdir(exist_ok=True)
    conf = scratch / "icinga2.conf"
    conf.write_text(
        f'const PluginContribDir = "{Path(PLUGIN).parent}"\n'
        'const NodeName = "relayprobe-test"\nconst ZoneName = "relayprobe-test"\n'
        f'include <itl>\ninclude "{ICINGA_CONF}"\n'
        'object Host "relay" { check_command = "dummy"; address = "127.0.0.1" }\n' + services
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


SERVICES = """
object Service "m365-relay" {
  host_name = "relay"
  check_command = "m365_relay"
  vars.m365_relay_from_exporter = "http://127.0.0.1:9465"
  vars.m365_relay_target = "m365-submission"
  vars.m365_relay_max_age = 900
  vars.m365_relay_warning = "60"
  vars.m365_relay_critical = "300"
}
object Service "m365-relay-roundtrip" {
  host_name = "relay"
  check_command = "m365_relay"
  check_interval = 15m
  vars.m365_relay_host = "smtp.office365.com"
  vars.m365_relay_username = "probe@contoso.com"
  vars.m365_relay_env_smtp_password = "from-a-secret-store"
  vars.m365_relay_rcpt_to = "probe-inbox@fabrikam.com"
  vars.m365_relay_imap_host = "outlook.office365.com"
  vars.m365_relay_junk_folders = [ "Junk Email", "Spam" ]
  vars.m365_relay_expect_dmarc = "pass"
  vars.m365_relay_verbose = true
}
"""


def test_icinga2_validates_the_shipped_check_command(scratch: Path) -> None:
    conf = icinga_conf(scratch, SERVICES)
    proc = subprocess.run(
        icinga(conf, "daemon", "-C", scratch=scratch),
        capture_output=True,
        text=True,
        env=CORE_ENV,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Instantiated 2 Services." in proc.stdout
    assert "Finished validating the configuration file(s)." in proc.stdout


def test_icinga2_validation_catches_a_broken_definition(scratch: Path) -> None:
    conf = icinga_conf(
        scratch,
        SERVICES.replace(
            'check_command = "m365_relay"\n  check_int',
            'check_command = "m365_relayy"\n  check_int',
        ),
    )
    proc = subprocess.run(
        icinga(conf, "daemon", "-C", scratch=scratch),
        capture_output=True,
        text=True,
        env=CORE_ENV,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "m365_relayy" in proc.stdout


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


def netstrings(data: bytes) -> Iterator[dict]:
    """Icinga's state file: a sequence of netstrings ("<length>:<json>,")."""
    pos = 0
    while pos < len(data):
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        yield json.loads(data[colon + 1 : colon + 1 + length])
        pos = colon + 1 + length + 1


def test_icinga2_core_runs_the_check_and_records_state_and_perfdata(
    scratch: Path,
    exporter: Exporter,  # noqa: F811 - pytest fixture
) -> None:
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
    daemon = subprocess.Popen(
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
        daemon.send_signal(signal.SIGTERM)  # Icinga dumps its state file on the way out
        daemon.wait(timeout=30)
    assert len(exporter.requests) >= 2, "Icinga did not run the check within 20 s"
    state = {}
    for item in netstrings((scratch / "data" / "icinga2.state").read_bytes()):
        if item.get("name") == "relay!m365-relay":
            state = item["update"]["last_check_result"]
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
                "illegal_macro_output_chars=`~$&|'\"<>",
            ]
        )
        + "\n"
    )
    return cfg


def test_nagios4_validates_the_shipped_examples(scratch: Path) -> None:
    cfg = nagios_cfg(scratch, NAGIOS_DIR / "services.cfg")
    proc = subprocess.run(
        ["nagios4", "-v", str(cfg)], capture_output=True, text=True, env=CORE_ENV, timeout=60
    )
    assert proc.returncode == 0, proc.stdout
    assert "Checked 3 services." in proc.stdout
    assert "Total Errors:   0" in proc.stdout and "Total Warnings: 0" in proc.stdout


def test_nagios4_core_runs_the_check_and_records_state_and_perfdata(
    scratch: Path,
    exporter: Exporter,  # noqa: F811 - pytest fixture
) -> None:
    exporter.publish(delivered(), dt.datetime.now(dt.UTC))
    services = scratch / "test-services.cfg"
    services.write_text(f"""
define host {{
    use                     generic-host
    host_name               relay
    address                 127.0.0.1
    max_check_attempts      1
    check_period            24x7
    notification_period     24x7
    contact_groups          admins
}}
define service {{
    use                     generic-service
    host_name               relay
    service_description     M365 relay
    check_command           check_m365_relay_exporter!{exporter.url}!m365-submission!900!60!300
}}
""")
    cfg = nagios_cfg(scratch, services)
    subprocess.run(["nagios4", "-d", str(cfg)], env=CORE_ENV, check=True, timeout=30)
    var = scratch / "var"
    try:
        deadline = time.monotonic() + 10
        while not (var / "nagios.cmd").is_fifo() and time.monotonic() < deadline:
            time.sleep(0.05)
        now = int(time.time())
        command = f"[{now}] SCHEDULE_FORCED_SVC_CHECK;relay;M365 relay;{now}\n"
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
    assert fields["current_state"] == "0"
    assert fields["plugin_output"] == "M365 RELAY OK - m365-submission: delivered to INBOX in 12.4s"
    assert re.fullmatch(
        r"delivery=12\.4s;60;300;0 smtp_connect=0\.012s;;;0 smtp_tls=0\.034s;;;0 "
        r"smtp_auth=0\.101s;;;0 smtp_submit=0\.245s;;;0 total=12\.8s;;;0 scl=1;;;-1;9 age=\d+s;;;0",
        fields["performance_data"],
    )
    assert fields["long_plugin_output"].startswith("\\\\_[OK] SMTP smtp.office365.com:587")


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


def test_nrpe_serves_the_shipped_snippet(scratch: Path, exporter: Exporter) -> None:  # noqa: F811
    # The nagios user cannot reach the venv under /root: the plugin runs on Debian's python3.
    assert Path("/usr/bin/python3").exists(), "Debian's /usr/bin/python3 is missing"
    exporter.publish(delivered(), dt.datetime.now(dt.UTC))
    plugin = install_for_nagios_user(scratch)
    # The snippet as shipped, pointed at the installed plugin and the stand-in exporter.
    snippet = NRPE_CONF.read_text()
    snippet = snippet.replace("/usr/lib/nagios/plugins/check_m365_relay", plugin)
    snippet = snippet.replace("http://127.0.0.1:9465", exporter.url)
    (scratch / "relayprobe.cfg").write_text(snippet)
    port = free_port()
    (scratch / "nrpe.cfg").write_text(
        f"pid_file={scratch / 'nrpe.pid'}\nserver_port={port}\nserver_address=127.0.0.1\n"
        "nrpe_user=nagios\nnrpe_group=nagios\nallowed_hosts=127.0.0.1\ndont_blame_nrpe=0\n"
        f"command_timeout=60\ninclude={scratch / 'relayprobe.cfg'}\n"
    )
    daemon = subprocess.Popen(
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
        daemon.terminate()
        daemon.wait(timeout=10)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith(
        "M365 RELAY OK - m365-submission: delivered to INBOX in 12.4s | delivery=12.4s;60;300;0 "
    )
    assert "\\_[OK] result: " in proc.stdout


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
