"""``relayprobe validate``: check a configuration file and list every error with its path."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from probe.config import ConfigError, load_config, redacted_dict, split_problem


def problems_json(
    errors: list[str], warnings: list[str], file: Path | None = None
) -> dict[str, list[dict[str, str | None]]]:
    """The "errors" and "warnings" of a --json document, each line as {"path", "message"}."""
    return {
        "errors": [split_problem(line, file) for line in errors],
        "warnings": [split_problem(line, file) for line in warnings],
    }


def dump_json(document: dict[str, Any], out: TextIO) -> None:
    """One indented JSON document and a newline (once and validate print the same way)."""
    json.dump(document, out, indent=2)
    out.write("\n")


def run_validate(
    path: str, *, as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        if as_json:
            problems = problems_json(exc.errors, exc.warnings, exc.file)
            dump_json({"valid": False, **problems, "targets": []}, out)
            return 3
        print(f"{path}: {len(exc.errors)} error(s)", file=err)
        for line in exc.errors:
            print(f"  {line}", file=err)
        return 3
    names = [t.name for t in config.targets]
    if as_json:
        # "config": the resolved configuration (defaults and presets applied), secrets redacted.
        document = {"valid": True, **problems_json([], config.warnings), "targets": names}
        dump_json({**document, "config": redacted_dict(config)}, out)
        return 0
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    print(f"{path}: ok ({len(config.targets)} target(s): {', '.join(names)})", file=out)
    return 0
