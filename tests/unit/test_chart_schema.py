"""The chart's values schema accepts exactly the config keys and choices the loader knows."""

from __future__ import annotations

import json
import typing
from pathlib import Path

from probe.config.clouds import CloudName
from probe.config.model import Defaults, TargetBase, TargetIn

SCHEMA = Path(__file__).resolve().parents[2] / "helm/relayprobe/values.schema.json"


def _config_schema() -> dict[str, typing.Any]:
    return json.loads(SCHEMA.read_text())["properties"]["config"]


def test_defaults_keys_are_the_loaders() -> None:
    # additionalProperties is false: a key missing here makes `helm install` refuse a valid config.
    keys = set(_config_schema()["properties"]["defaults"]["properties"])
    assert keys == set(Defaults.model_fields)


def test_target_keys_are_the_loaders() -> None:
    keys = set(_config_schema()["properties"]["targets"]["items"]["properties"])
    assert keys == set(TargetIn.model_fields)


def test_modes_and_clouds_are_the_loaders() -> None:
    schema = json.loads(SCHEMA.read_text())
    target = _config_schema()["properties"]["targets"]["items"]["properties"]
    modes = typing.get_args(TargetBase.model_fields["mode"].annotation)
    assert target["mode"]["enum"] == list(modes)
    assert schema["definitions"]["cloud"]["enum"] == list(typing.get_args(CloudName))
