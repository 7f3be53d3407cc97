"""The layers of docs/ARCHITECTURE.md, kept so: every import in harness/ points down.

Each module belongs to a component (a sub-package, or a top-level module); each component has
a layer. A module may import its own component and components of lower layers, never a
sibling of its own layer or anything above. Some components also may not import heavy
third-party packages (the schedule algebra and `harness plan` must work without torch).
The walk reads every import statement, including those inside functions and under
TYPE_CHECKING, since a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

# Lowest first. Components on one line are siblings: neither may import the other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.errors", "harness.version"),
    ("harness.core", "harness.fsio", "harness.allocator"),
    ("harness.config", "harness.data", "harness.models", "harness.results"),
    ("harness.train", "harness.analysis"),
    ("harness.app",),
    ("harness.cli",),
    ("harness.__main__", "harness"),  # `python -m harness`; the package facade (public API)
)
LAYER = {component: i for i, layer in enumerate(LAYERS) for component in layer}

# Third-party packages a component must not import (directly or lazily).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "harness.core": ("torch", "numpy", "pydantic", "yaml", "ruamel", "pandas", "pyarrow"),
    "harness.config": ("torch", "pandas", "pyarrow", "matplotlib"),
    "harness.results": ("torch",),  # provenance imports torch lazily, allowed below
    "harness.analysis": ("torch",),
}
ALLOWED_EXCEPTIONS = {
    # Reads the torch version and device name of a run that already imported torch.
    ("harness.results.provenance", "torch"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _component(module: str) -> str:
    """The longest LAYER key that is `module` or a package above it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in LAYER:
            return candidate
    raise KeyError(module)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from harness import store` imports the module harness.store.
            if node.module.startswith("harness"):
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _is_module(name: str) -> bool:
    base = PACKAGE.parent / Path(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def test_every_module_has_a_layer():
    missing = [str(p) for p in _modules() if not _safe_component(_module_name(p))]
    assert not missing, f"give these a layer in LAYERS: {missing}"


def _safe_component(module: str) -> str | None:
    try:
        return _component(module)
    except KeyError:
        return None


def test_imports_point_down_the_layers():
    wrong: list[str] = []
    for path in _modules():
        here = _module_name(path)
        mine = _component(here)
        for line, target in _imports(path):
            if not target.startswith("harness") or not _is_module(target):
                continue
            theirs = _component(target)
            if theirs == mine:
                continue
            if LAYER[theirs] >= LAYER[mine]:
                rel = path.relative_to(PACKAGE.parent)
                wrong.append(
                    f"{rel}:{line}: {mine} (layer {LAYER[mine]}) imports {target} "
                    f"({theirs}, layer {LAYER[theirs]})"
                )
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_light_layers_do_not_import_heavy_packages():
    wrong: list[str] = []
    for path in _modules():
        here = _module_name(path)
        banned = FORBIDDEN.get(_component(here), ())
        for line, target in _imports(path):
            top = target.split(".")[0]
            if top in banned and (here, top) not in ALLOWED_EXCEPTIONS:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {target}")
    assert not wrong, "heavy imports in light layers:\n" + "\n".join(wrong)


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    """The walk itself can fail: an import of the app layer from core is reported."""
    fake = tmp_path / "harness"
    (fake / "core").mkdir(parents=True)
    (fake / "app").mkdir()
    for init in (fake / "__init__.py", fake / "core" / "__init__.py", fake / "app" / "__init__.py"):
        init.write_text("")
    (fake / "app" / "runner.py").write_text("")
    (fake / "core" / "bad.py").write_text("def f():\n    from harness.app import runner\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match=r"core/bad.py:2: harness.core .* imports"):
        test_imports_point_down_the_layers()


def test_plan_does_not_import_torch(cli):
    """`harness plan` answers at once: the config and core layers never pull torch in."""
    probe = (
        "import sys; from harness.config.suite import load_suite; "
        "load_suite('suites/cifar.yaml'); print('torch' in sys.modules)"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=PACKAGE.parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_analysis_assembles_upwards_only():
    """The document assembles tables, render, display, figures and the gate; none of them
    needs the document, and the tables (numbers) never need render or display (text)."""
    analysis = PACKAGE / "analysis"
    for name in ("tables", "render", "display", "figures", "gate", "gate_applied"):
        targets = {t for _, t in _imports(analysis / f"{name}.py")}
        assert "harness.analysis.document" not in targets, name
    text = {"harness.analysis.render", "harness.analysis.display"}
    assert not text & {t for _, t in _imports(analysis / "tables.py")}


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the harness modules it imports (lazy and TYPE_CHECKING ones included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        here = _module_name(path)
        graph[here] = {
            target
            for _, target in _imports(path)
            if target.startswith("harness") and _is_module(target) and target != here
        }
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two modules or more (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    """No two modules import each other, directly or round a loop, even lazily or only for
    type checking: a loop means neither can be read (or changed) without the other."""
    circles = _circles(_import_graph(PACKAGE))
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_circle_check_catches_a_type_checking_loop(tmp_path, monkeypatch):
    fake = tmp_path / "harness"
    (fake / "core").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "core" / "__init__.py").write_text("")
    (fake / "core" / "a.py").write_text("from harness.core import b\n")
    (fake / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.core.a import X\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _circles(_import_graph(fake)) == [["harness.core.a", "harness.core.b"]]


def test_the_results_folders_layout_is_spelled_once():
    """Where a cell's files go in a results folder is `harness.results.paths`'s alone
    (run_file, curve_file, checkpoint_path, log_file, slurm_dir, jobs_file): a module that
    joined `results / "logs"` itself would drift when the layout moves."""
    import re

    joined = re.compile(r'/ "(runs|curves|checkpoints|logs|slurm)"|"jobs\.json"')
    layout = PACKAGE / "results" / "paths.py"
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in _modules()
        if path != layout
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if joined.search(line) and not line.lstrip().startswith("#")
    ]
    assert not wrong, "results paths spelled outside results/paths.py:\n" + "\n".join(wrong)


# ---------------------------------------------------------------------------------------------
# Names and sizes (docs/ARCHITECTURE.md, "Rules that keep it so", 2 and 11).

LONG_MODULE = 450  # lines; over it a module says at its top why it is not split
# A name shared on purpose: each layer with a registry keeps it in its own `registry` module.
SHARED_NAMES = {"__init__", "registry"}


def test_a_module_name_means_one_module():
    seen: dict[str, list[str]] = {}
    for path in _modules():
        seen.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    twice = {name: paths for name, paths in seen.items() if len(paths) > 1}
    extra = {name: paths for name, paths in twice.items() if name not in SHARED_NAMES}
    assert not extra, (
        f"one name, several modules: {extra}; name each after what it holds "
        "(app/X.py is the command `harness X`)"
    )


def test_a_long_module_says_why_it_is_not_split():
    unexplained = []
    for path in _modules():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > LONG_MODULE and "Not split:" not in doc:
            unexplained.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
    assert not unexplained, (
        f"split these, or say why not in a 'Not split:' paragraph of the docstring: {unexplained}"
    )


def test_no_docstring_states_its_own_length():
    # "(About 440 lines: ...)" went stale as the module grew; the reason stays true, the count
    # does not.
    stale = [
        str(path.relative_to(PACKAGE))
        for path in _modules()
        if re.search(
            r"\b[Aa]bout \d+ lines\b", ast.get_docstring(ast.parse(path.read_text())) or ""
        )
    ]
    assert not stale, f"drop the line count from these docstrings: {stale}"
