"""Every reason is documented once: its class in docs/architecture.md, a row in docs/runbook.md."""

from __future__ import annotations

import re
from pathlib import Path

from probe.result import CONFIGURATION_REASONS, Reason

DOCS = Path(__file__).resolve().parents[2] / "docs"


def architecture_classes() -> dict[str, str]:
    """reason -> class, read from the "Reasons" table of docs/architecture.md."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Reasons", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section, re.M)
    return {reason: cls.strip() for reason, cls in rows}


def test_the_architecture_table_lists_every_reason_once() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Reasons", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert sorted(listed) == sorted(r.value for r in Reason)
    assert len(listed) == len(set(listed))


def test_configuration_class_is_exactly_what_the_scheduler_backs_off_after() -> None:
    documented = {r for r, cls in architecture_classes().items() if cls == "configuration"}
    assert documented == {r.value for r in CONFIGURATION_REASONS}


def test_the_runbook_has_a_row_for_every_failure_reason() -> None:
    text = (DOCS / "runbook.md").read_text(encoding="utf-8")
    cells = re.findall(r"^\| ([^|]+) \|", text, re.M)
    named = {name for cell in cells for name in re.findall(r"`([a-z_]+)`", cell)}
    missing = sorted(r.value for r in Reason if r is not Reason.OK and r.value not in named)
    assert missing == []
