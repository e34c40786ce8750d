"""Every option of every command says what it does in --help."""

from __future__ import annotations

import argparse

import pytest

from exporters.daemon import _parser as daemon_parser
from nagios.argspec import build_parser as check_parser
from relayprobe.cli import _parser as cli_parser


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [("relayprobe run", daemon_parser()), ("check_m365_relay", check_parser())]
    top = cli_parser()
    found.append(("relayprobe", top))
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += [(f"relayprobe {name}", sub) for name, sub in action.choices.items()]
    return found


@pytest.mark.parametrize(
    ("name", "parser"), parsers(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_option_has_help_text(name: str, parser: argparse.ArgumentParser) -> None:
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
        and not (a.help or "").strip()
    ]
    assert missing == [], f"{name}: options without help: {missing}"
