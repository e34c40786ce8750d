"""The package map as a rule: who may import whom (docs/architecture.md), and no import cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("probe", "exporters", "nagios", "relayprobe")
#: Package -> the top-level packages of ours it must never import (lazy imports included).
FORBIDDEN = {
    "probe": {"exporters", "nagios", "relayprobe"},
    "exporters": {"nagios", "relayprobe"},
    "nagios": {"exporters", "relayprobe"},
    "relayprobe": set(),
}
#: Packages that present results: they see the acquisition library only through `probe`.
PRESENTERS = ("exporters", "nagios")
#: Inside probe/: each part -> the parts it may import (docs/architecture.md, "Package map").
PROBE_LAYERS = {
    "probe.result": set(),
    "probe.config": set(),
    "probe.tag": set(),
    "probe.arrivals": {"probe.tag"},
    "probe.tls": set(),
    "probe.failure": {"probe.result"},
    "probe.message": {"probe.tag"},
    "probe.m365": {"probe.config", "probe.failure", "probe.result"},
    "probe.verdict": {"probe.config", "probe.result"},
    "probe.smtp": {"probe.config", "probe.failure", "probe.m365", "probe.result", "probe.tls"},
    # Both mailbox watches: the same parts, so either can stand behind probe.roundtrip.Watch.
    **dict.fromkeys(
        ("probe.imap", "probe.graph"),
        {"probe.arrivals", "probe.config", "probe.failure", "probe.m365", "probe.result"}
        | {"probe.tag", "probe.tls"},
    ),
    "probe.posture": {"probe.config", "probe.result", "probe.tls", "probe.verdict"},
}
PROBE_LAYERS["probe.roundtrip"] = set(PROBE_LAYERS)


def part(module: str) -> str:
    """``probe.x.y`` -> ``probe.x`` (the part of probe/ a module belongs to)."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of ours under ``root``, by dotted name."""
    return {
        module_name(path, root): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, function-level ones included.

    ``from pkg import x`` counts as an import of ``pkg.x`` when that is a module of ours.
    """
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks the package map, as "file:line: imports module"."""
    mods = modules(root)
    problems = []
    for name, path in mods.items():
        top = name.split(".")[0]
        for target, line in imports(name, path, set(mods)):
            target_top = target.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if target_top in FORBIDDEN[top]:
                problems.append(f"{where}: {top}/ imports {target}")
            elif top in PRESENTERS and target_top == "probe" and target != "probe":
                problems.append(f"{where}: {top}/ imports {target}, not the interface `probe`")
            elif (
                top == target_top == "probe"
                and name != "probe"
                and part(target) not in {part(name), *PROBE_LAYERS.get(part(name), ())}
            ):
                problems.append(f"{where}: {part(name)} imports {target}")
    return problems


def cycles(root: Path) -> list[list[str]]:
    """Import cycles between modules of ours (each once, as the modules along it)."""
    mods = modules(root)
    graph = {
        name: sorted({t for t, _ in imports(name, path, set(mods)) if t in mods and t != name})
        for name, path in mods.items()
    }
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return found


def test_every_import_follows_the_package_map() -> None:
    assert violations(ROOT) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""x."""\n')
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"probe/a.py": "def f():\n    from exporters import daemon\n"},
            "probe/ imports exporters",
        ),
        ({"probe/b.py": "import relayprobe.cli\n"}, "probe/ imports relayprobe.cli"),
        ({"exporters/m.py": "from nagios import output\n"}, "exporters/ imports nagios"),
        ({"nagios/c.py": "from exporters.x import y\n"}, "nagios/ imports exporters.x"),
        ({"nagios/d.py": "from probe.result import Status\n"}, "not the interface `probe`"),
        ({"probe/config.py": "from probe.smtp import send\n"}, "probe.config imports probe.smtp"),
    ],
)
def test_the_import_check_catches_a_broken_rule(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    found = violations(_tree(tmp_path, files))
    assert len(found) == 1 and expected in found[0], found


def test_the_cycle_check_catches_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "probe/a.py": "from probe.b import x\n",
            "probe/b.py": "def x():\n    from probe import a\n",
            "probe/c.py": "from . import a\n",
        },
    )
    assert cycles(root) == [["probe.a", "probe.b", "probe.a"]]
