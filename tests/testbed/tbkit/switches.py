"""Run-time fault switches: Postfix access/transport tables and Dovecot's authfail/authtemp files.

Every switch entry remembers its owner (env TB_SWITCH_OWNER, set by the pytest fixture to the
session's pid), so `clear` from one test session never removes another session's switches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from . import config

REPLIES = {
    "defer": "451 4.3.2 Temporary server error. Please try again later. (testbed switch defer)",
    "reject": "550 5.1.1 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address"
    " lookup (testbed switch reject)",
    "hold": "HOLD testbed switch hold",
}
IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
KEY = re.compile(r"^[a-z0-9.@+_-]+$")
# The pipe gets ${extension} and ${nexthop}; delay-lmtp.py takes N from "delayN" or the nexthop.
STATIC_DELAY = r"/^[^@]*\+delay[0-9]+@probe\.test$/  delay:0"
USAGE = (
    "usage: tb switch defer|reject|hold [KEY] | unset KEY | delay SECONDS [KEY]"
    " | authfail on|off [USER] | authtemp on|off [USER] | release | flush | queue | clear [all]"
    " | show"
)
# An extra field Dovecot cannot expand: the authtemp passdb lookup fails internally, which IMAP
# reports as NO [UNAVAILABLE] (tests/testbed/README.md#authtemp-and-dovecot-internal-failures).
AUTHTEMP_FIELD = "authtemp=%{testbed_switch_authtemp}"
AUTH_SWITCHES = ("authfail", "authtemp")


def empty() -> dict[str, Any]:
    # faults: key -> [action, owner]; delay: key -> [seconds, owner];
    # authfail, authtemp: user -> owner
    return {"faults": {}, "delay": {}, "authfail": {}, "authtemp": {}, "generation": 0}


def load(state: Path) -> dict[str, Any]:
    path = state / "switches.json"
    data = json.loads(path.read_text()) if path.exists() else empty()
    for kind in AUTH_SWITCHES:  # a state file written before that switch existed
        data.setdefault(kind, {})
    return data


def _delay_regex(key: str) -> str:
    if "@" in key:
        local, domain = key.split("@", 1)
        return rf"/^{re.escape(local)}(\+[^@]*)?@{re.escape(domain)}$/"
    return rf"/[@.]{re.escape(key)}$/"


def write_tables(state: Path, data: dict[str, Any]) -> None:
    """Render the switch state into the files Postfix/Dovecot read (texthash: no postmap needed)."""
    data["generation"] = data.get("generation", 0) + 1
    tables: dict[str, list[str]] = {"client": [], "sender": [], "recipient": []}
    for key, (action, _owner) in sorted(data["faults"].items()):
        # An IP is a client key; an address or domain matches the sender and the recipient.
        for kind in ["client"] if IP.match(key) else ["sender", "recipient"]:
            tables[kind].append(f"{key}\t{REPLIES[action]}\n")
    past = time.time() - 10
    for kind, lines in tables.items():
        path = state / "postfix" / f"fault_{kind}"
        path.write_text("".join(lines))
        # Postfix does not trust a texthash file younger than 2 s (it might be mid-edit) and
        # retries for up to 2 s before greeting: back-date it so the next session is instant.
        os.utime(path, (past, past))
    transport = [
        "# +delayN recipients, then `tb switch delay N KEY` (addresses before domains).",
        STATIC_DELAY,
    ]
    for key, (seconds, _owner) in sorted(data["delay"].items(), key=lambda kv: "@" not in kv[0]):
        transport.append(f"{_delay_regex(key)}  delay:{int(seconds)}")
    (state / "postfix/transport.pcre").write_text("\n".join(transport) + "\n")
    authfail = state / "dovecot/authfail.passwd"
    authfail.write_text("".join(f"smtp/{user}:\n" for user in sorted(data["authfail"])))
    authtemp = state / "dovecot/authtemp.passwd"
    # passwd-file fields: user:password:uid:gid:gecos:home:shell:extra fields
    authtemp.write_text(
        "".join(f"imap/{user}:::::::{AUTHTEMP_FIELD}\n" for user in sorted(data["authtemp"]))
    )
    # Dovecot reloads a passwd-file when mtime or size differ: a unique mtime per generation.
    stamp = 1_000_000_000 + data["generation"]
    for path in (authfail, authtemp):
        os.utime(path, (stamp, stamp))
    (state / "switches.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def postfix_cmd(state: Path, tool: str, *args: str) -> str:
    proc = subprocess.run(
        [tool, "-c", str(state / "postfix"), *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout + proc.stderr


def _key(words: list[str], default: str) -> str:
    key = (words[0] if words else default).lower()
    if not KEY.match(key):
        raise ValueError(f"bad KEY {key!r}: use a client IP, an address or a domain")
    return key


def _clear(data: dict[str, Any], owner: str, everything: bool) -> dict[str, Any]:
    if everything or not owner:
        return {**empty(), "generation": data.get("generation", 0)}
    for kind in ("faults", "delay"):
        data[kind] = {k: v for k, v in data[kind].items() if v[1] != owner}
    for kind in AUTH_SWITCHES:
        data[kind] = {u: o for u, o in data[kind].items() if o != owner}
    return data


def apply(state: Path, args: list[str], reload: Any) -> str:
    """Apply one `tb switch ...` command; `reload` makes Postfix use the new tables."""
    data, owner = load(state), os.environ.get("TB_SWITCH_OWNER", "")
    auth_before = [sorted(data[kind]) for kind in AUTH_SWITCHES]
    cmd, rest = (args[0], args[1:]) if args else ("", [])
    if cmd in REPLIES and len(rest) <= 1:
        key = _key(rest, config.DOMAIN)
        data["faults"][key] = [cmd, owner]
        message = f"{cmd} {key}"
    elif cmd == "unset" and len(rest) == 1:
        data["faults"].pop(_key(rest, ""), None)
        data["delay"].pop(_key(rest, ""), None)
        message = f"unset {_key(rest, '')}"
    elif cmd == "delay" and len(rest) in (1, 2) and rest[0].isdigit():
        key = _key(rest[1:], config.DOMAIN)
        if int(rest[0]):
            data["delay"][key] = [int(rest[0]), owner]
        else:
            data["delay"].pop(key, None)
        message = f"delay {int(rest[0])} s for {key}"
    elif cmd in AUTH_SWITCHES and rest[:1] in (["on"], ["off"]) and len(rest) <= 2:
        users = [_key(rest[1:], "")] if len(rest) == 2 else list(config.USERS)
        for user in users:
            if rest[0] == "on":
                data[cmd][user] = owner
            else:
                data[cmd].pop(user, None)
        message = f"{cmd} {rest[0]} for {', '.join(users)}"
    elif cmd == "clear" and rest in ([], ["all"]):
        data = _clear(data, owner, rest == ["all"])
        message = "clear" + (" all" if rest else "")
    elif cmd == "show" and not rest:
        return json.dumps(data, indent=1, sort_keys=True)
    elif cmd == "release" and not rest:
        postfix_cmd(state, "postsuper", "-H", "ALL")
        postfix_cmd(state, "postqueue", "-f")
        return "released held mail"
    elif cmd == "flush" and not rest:
        postfix_cmd(state, "postqueue", "-f")
        return "flushed queue"
    elif cmd == "queue" and not rest:
        return postfix_cmd(state, "postqueue", "-p").strip()
    else:
        raise ValueError(f"unknown switch {' '.join(args)!r}; {USAGE}")
    write_tables(state, data)
    reload()
    if [sorted(data[kind]) for kind in AUTH_SWITCHES] != auth_before:
        # Dovecot stats a passwd-file at most once per second (ioloop time): once the clock has
        # moved to the next second, the very next AUTH sees the new file.
        time.sleep(1.02 - time.time() % 1)
    return message
