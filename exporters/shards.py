"""Which shard probes which target: rendezvous hashing over target names (docs/kubernetes.md, "Shards")."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Environment variables a StatefulSet pod gets (docs/kubernetes.md, "Shards"): the shard count,
#: and the pod name whose trailing ``-<ordinal>`` is the shard number (HOSTNAME as a fallback).
SHARDS_ENV = "RELAYPROBE_SHARDS"
POD_NAME_ENVS = ("POD_NAME", "HOSTNAME")
MAX_SHARDS = 64


class ShardError(ValueError):
    """A shard setting that cannot work; the message names the flag or variable."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, like StatefulSet ordinals)."""

    index: int
    count: int

    @property
    def run_id(self) -> str:
        """The run id in this shard's probe tags: independent of ``count``, so a shard keeps its
        mail when the count changes; a target that moved leaves mail of another run, removed
        once stale (docs/architecture.md, "Cleanup and nothing is lost")."""
        return f"shard-{self.index}"

    def instance(self, base: str) -> str:
        """The shard's instance name: ``<instance>-shard-<index>`` (status page, logs, API)."""
        return f"{base}-shard-{self.index}"

    def keeps(self, name: str) -> bool:
        return owner(name, self.count) == self.index


def _weight(name: str, index: int) -> int:
    digest = hashlib.sha256(f"{name}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(name: str, count: int) -> int:
    """The shard that probes target ``name``: the highest weight sha256(name, shard) wins.

    Rendezvous (highest random weight) hashing: going from N to N+1 shards moves only the
    targets the new shard wins (about 1/(N+1) of them) and never moves one between old shards;
    every target has exactly one owner for every N.
    """
    return max(range(count), key=lambda i: _weight(name, i))


def assignment(names: Iterable[str], count: int) -> dict[str, int]:
    """Target name -> owning shard, for every name."""
    return {name: owner(name, count) for name in names}


def parse(text: str, flag: str = "--shard") -> Shard:
    """``I/N`` (0 <= I < N <= MAX_SHARDS) as a Shard; ShardError naming ``flag`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ShardError(f"{flag} {text!r}: expected I/N, e.g. 0/3 (shard 0 of 3)")
    return _checked(int(match.group(1)), int(match.group(2)), flag)


def _checked(index: int, count: int, where: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise ShardError(f"{where}: the shard count must be 1 to {MAX_SHARDS}, not {count}")
    if not 0 <= index < count:
        raise ShardError(f"{where}: shard {index} does not exist among {count} (0 to {count - 1})")
    return Shard(index, count)


def resolve(
    shard: str | None, shards: int | None, env: Mapping[str, str] | None = None
) -> Shard | None:
    """The shard from ``--shard I/N``, or ``--shards N`` (default: RELAYPROBE_SHARDS) with the
    index from the pod name's ordinal; None when unsharded (no flag, no variable, or N = 1)."""
    env = os.environ if env is None else env
    if shard is not None:
        if shards is not None:
            raise ShardError("--shard I/N and --shards N exclude each other")
        found = parse(shard)
        return found if found.count > 1 else None
    if shards is None:
        raw = env.get(SHARDS_ENV, "").strip()
        if not raw:
            return None
        if not raw.isdigit():
            raise ShardError(f"{SHARDS_ENV}={raw!r}: expected the shard count, e.g. 3")
        shards = int(raw)
    if not 1 <= shards <= MAX_SHARDS:
        raise ShardError(f"the shard count must be 1 to {MAX_SHARDS}, not {shards}")
    if shards == 1:
        return None
    for var in POD_NAME_ENVS:
        match = re.search(r"-(\d+)$", env.get(var, ""))
        if match:
            return _checked(int(match.group(1)), shards, f"{var}={env[var]}")
    raise ShardError(
        f"{shards} shards, but neither POD_NAME nor HOSTNAME ends in -<ordinal> (a StatefulSet "
        "pod's name does): give the shard with --shard I/N"
    )
