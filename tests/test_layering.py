"""The results and analysis layers import only downwards (see DESIGN.md, "The flow")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "harness"

ALLOWED = {
    "results": {"harness.core", "harness.errors", "harness.fsio", "harness.results", "harness"},
    "analysis": {
        "harness.core",
        "harness.errors",
        "harness.fsio",
        "harness.results",
        "harness.analysis",
    },
}


def _harness_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "harness" or n.startswith("harness.")}


def _layer(name: str) -> str:
    return ".".join(name.split(".")[:2])


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downwards(layer: str) -> None:
    for path in sorted((HARNESS / layer).glob("*.py")):
        bad = {n for n in _harness_imports(path) if _layer(n) not in ALLOWED[layer]}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_analysis_modules_do_not_import_report() -> None:
    """report assembles the others; none of them may need it (no cycles)."""
    for name in ("tables", "render", "figures", "check"):
        imports = _harness_imports(HARNESS / "analysis" / f"{name}.py")
        assert "harness.analysis.report" not in imports, name
    assert "harness.analysis.render" not in _harness_imports(HARNESS / "analysis" / "tables.py")
