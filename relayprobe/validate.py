"""``relayprobe validate``: check a configuration file and list every error with its path."""

from __future__ import annotations

import sys
from typing import TextIO

from probe.config import ConfigError, load_config


def run_validate(path: str, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.errors)} error(s)", file=err)
        for line in exc.errors:
            print(f"  {line}", file=err)
        return 3
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    names = ", ".join(t.name for t in config.targets)
    print(f"{path}: ok ({len(config.targets)} target(s): {names})", file=out)
    return 0
