"""The config-and-target loader shared by once, doctor and login: errors printed, never raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from probe.config import ConfigError, load_config

if TYPE_CHECKING:
    from probe.config import Config, Target


def load_selected(
    path: str, names: Sequence[str] | None, *, err: TextIO
) -> tuple[Config, list[Target]] | None:
    """Load ``path`` and pick the named targets (all when None); print errors, None on failure."""
    try:
        config = load_config(path)
        selected = [config.target(n) for n in names] if names else list(config.targets)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"relayprobe: {line}", file=err)
        return None
    for warning in config.warnings:
        print(f"warning: {warning}", file=err)
    return config, selected
