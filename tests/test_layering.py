"""The layers are one-way (README.md): vocab <- probes, vocab <- playbooks <- wizard.
Read from the source (every import statement, also the late ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vocab", "probes", "playbooks", "wizard", "exporter")
# What each package must never import, directly or in a late import.
FORBIDDEN = {
    "vocab": {"probes", "playbooks", "wizard", "exporter", "bcc", "textual"},
    "probes": {"playbooks", "wizard", "exporter", "textual"},
    "playbooks": {"probes", "wizard", "exporter", "bcc", "textual"},
}


def imported_packages(path: Path, package: str) -> set[str]:
    """Top-level names of every module this file imports (relative imports resolve to its package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.add(package if node.level else (node.module or "").split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_layers_below(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found = imported_packages(path, package) & FORBIDDEN[package]
        if found:
            bad[str(path.relative_to(ROOT))] = sorted(found)
    assert not bad, f"{package}/ imports layers it must not: {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The walk finds imports inside functions, where a late import would hide."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from probes.runtime.stacks import ksym\n    return ksym\n")
    assert imported_packages(f, "playbooks") == {"probes"}
