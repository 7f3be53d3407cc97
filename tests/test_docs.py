"""The documentation site: its generated reference pages equal a fresh generation from the
schema and the command line (so they cannot drift), and every page of docs/ is in it.
(`mkdocs build --strict` itself is a step of .ci/run.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import SuiteSpec
from tests.conftest import REPO, run_cli

GEN = [sys.executable, str(REPO / "scripts" / "gen_docs.py")]
REFERENCE = REPO / "docs" / "reference"


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GEN, *args], cwd=REPO, capture_output=True, text=True)


def test_the_committed_reference_pages_equal_a_fresh_generation() -> None:
    proc = _gen("--check")
    assert proc.returncode == 0, proc.stderr + "\n(run: python scripts/gen_docs.py)"


def test_a_stale_reference_page_is_found(tmp_path: Path) -> None:
    shutil.copytree(REFERENCE, tmp_path, dirs_exist_ok=True)
    page = tmp_path / "suite.md"
    page.write_text(page.read_text().replace("| `ghost_batch_size` |", "| `ghost_size` |"))
    proc = _gen("--check", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "suite.md" in proc.stderr and "cli.md" not in proc.stderr
    assert "python scripts/gen_docs.py" in proc.stderr


def test_the_suite_reference_lists_every_key_of_every_section() -> None:
    page = (REFERENCE / "suite.md").read_text()
    schema = SuiteSpec.model_json_schema()
    sections = {"SuiteSpec": schema, **schema["$defs"]}
    for name, node in sections.items():
        if "properties" not in node:
            continue
        section = page.split(f"{{ #{name.lower()} }}", 1)[1].split("\n## ", 1)[0]
        for key in node["properties"]:
            assert f"| `{key}` |" in section, f"{name}.{key}"
    # The words beside a key are the schema's own comments.
    assert "noise scale / 4" not in page  # a suite file's comment, not the schema's
    assert "how much g drops at each milestone" in page


def test_the_cli_reference_lists_every_command_and_option() -> None:
    page = (REFERENCE / "cli.md").read_text()
    top = run_cli("--help").stdout
    commands = re.findall(r"^│ (\w+)\s{2,}", top, flags=re.M)
    assert {"plan", "run", "status", "report", "check"} <= set(commands)
    for command in commands:
        if command == "data":
            continue
        assert f"## `harness {command}`" in page, command
        help_text = run_cli(command, "--help", env={"COLUMNS": "200"}).stdout
        # The first option of each row of --help's option table.
        options = set(re.findall(r"^│\s+(--[a-z][a-z0-9-]*)", help_text, flags=re.M))
        assert options, help_text
        for option in options:
            if option != "--help":
                section = page.split(f"## `harness {command}`", 1)[1].split("\n## ", 1)[0]
                assert f"`{option}" in section or f"/ {option}" in section, (command, option)


def _nav_pages() -> set[str]:
    text = (REPO / "mkdocs.yml").read_text()
    return set(re.findall(r":\s*([\w./-]+\.md)\s*$", text, flags=re.M))


def test_every_page_of_docs_is_in_the_site() -> None:
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert pages == _nav_pages()
    for kept in ("ARCHITECTURE.md", "gate.md", "gpu.md", "own-loop.md", "paper.md"):
        assert kept in pages


def test_the_docs_extra_and_ci_build_the_site_strictly() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("mkdocs-material") for d in project["optional-dependencies"]["docs"])
    ci = (REPO / ".ci" / "run").read_text()
    assert "docs]'" in ci
    steps = [line.strip() for line in ci.splitlines()]
    build = next(i for i, s in enumerate(steps) if "mkdocs build --strict" in s)
    assert build > steps.index("mypy harness")
