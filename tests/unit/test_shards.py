"""Sharding: rendezvous ownership of targets, the --shard/--shards/StatefulSet settings."""

from __future__ import annotations

import math

import pytest

from exporters.shards import ShardError, assignment, owner, parse, resolve

NAMES = [f"tenant-{i:02d}" for i in range(30)]


def test_every_target_has_exactly_one_owner_for_every_count() -> None:
    for count in range(1, 9):
        owners = assignment(NAMES, count)
        assert set(owners) == set(NAMES) and all(0 <= s < count for s in owners.values())
        kept = [[n for n in NAMES if parse(f"{i}/{count}").keeps(n)] for i in range(count)]
        assert sorted(n for share in kept for n in share) == sorted(NAMES)  # none twice, none lost


def test_adding_a_shard_moves_only_what_the_new_shard_wins() -> None:
    names = [f"n{i}" for i in range(3000)]
    for count in range(1, 8):
        before, after = assignment(names, count), assignment(names, count + 1)
        moved = [n for n in names if before[n] != after[n]]
        assert all(after[n] == count for n in moved)  # never from one old shard to another
        # About 1/(N+1) of the targets move (the new shard's fair share), not most of them.
        assert abs(len(moved) / len(names) - 1 / (count + 1)) < 0.03


def test_three_to_four_shards_moves_at_most_ceil_30_over_4_plus_2() -> None:
    # The names of tests/system/test_shards.py's 30 targets. Rendezvous hashing bounds the moves
    # in expectation (30/4), not for every set of names: docs/kubernetes.md#shards.
    names = [f"t{i:02d}" for i in range(30)]
    three, four = assignment(names, 3), assignment(names, 4)
    moved = sum(three[n] != four[n] for n in names)
    assert 0 < moved <= math.ceil(30 / 4) + 2
    assert all(any(three[n] == s for n in names) for s in range(3))


def test_ownership_is_stable_across_processes() -> None:
    # sha256 of the name and the shard number: no per-process hash seed, no dict order.
    assert [owner(n, 3) for n in ("a", "b", "tenant-00")] == [
        owner(n, 3) for n in ("a", "b", "tenant-00")
    ]
    assert owner("x", 1) == 0


@pytest.mark.parametrize(
    ("shard", "shards", "env", "expected"),
    [
        ("1/3", None, {}, (1, 3)),
        (None, 3, {"HOSTNAME": "relayprobe-2"}, (2, 3)),
        (None, None, {"RELAYPROBE_SHARDS": "3", "POD_NAME": "site-a-relayprobe-0"}, (0, 3)),
        (None, None, {"RELAYPROBE_SHARDS": "1", "HOSTNAME": "x"}, None),
        ("0/1", None, {}, None),
        (None, None, {}, None),
    ],
)
def test_resolve_takes_the_flag_or_the_statefulset_ordinal(
    shard: str | None, shards: int | None, env: dict[str, str], expected: tuple[int, int] | None
) -> None:
    got = resolve(shard, shards, env)
    assert ((got.index, got.count) if got is not None else None) == expected


@pytest.mark.parametrize(
    ("shard", "shards", "env", "message"),
    [
        ("3/3", None, {}, "shard 3 does not exist among 3"),
        ("a/b", None, {}, "expected I/N"),
        ("0/3", 3, {}, "exclude each other"),
        (None, 3, {"HOSTNAME": "laptop"}, "ends in -<ordinal>"),
        (None, 3, {"HOSTNAME": "relayprobe-5"}, "shard 5 does not exist among 3"),
        (None, None, {"RELAYPROBE_SHARDS": "three"}, "RELAYPROBE_SHARDS='three'"),
        (None, 0, {}, "must be 1 to 64"),
    ],
)
def test_unusable_shard_settings_name_the_flag_or_variable(
    shard: str | None, shards: int | None, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ShardError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(shard, shards, env)


def test_a_shard_names_itself_and_tags_with_a_count_independent_run_id() -> None:
    shard = parse("2/3")
    assert shard.instance("site-a") == "site-a-shard-2"
    assert shard.run_id == parse("2/5").run_id == "shard-2"
