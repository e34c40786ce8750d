"""The relayprobe configuration: YAML in, typed and validated models out, every problem reported."""

from probe.config.durations import parse_duration
from probe.config.load import load_config, parse_config, redacted_dict
from probe.config.messages import split_problem
from probe.config.model import (
    Auth,
    Config,
    ConfigError,
    Defaults,
    Expect,
    Mailbox,
    Smtp,
    Target,
    Thresholds,
)
from probe.config.secrets import Secret

__all__ = [
    "Auth",
    "Config",
    "ConfigError",
    "Defaults",
    "Expect",
    "Mailbox",
    "Secret",
    "Smtp",
    "Target",
    "Thresholds",
    "load_config",
    "parse_config",
    "parse_duration",
    "redacted_dict",
    "split_problem",
]
