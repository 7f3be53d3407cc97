"""Every install hint the project prints or documents installs this project's extras.

"harness" on PyPI is an unrelated distribution, so `pip install 'harness[lightning]'` would
fetch that project; the distribution is named otherwise and the hints install from a clone.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# `pip install [-e] TARGET[extras]`, the target quoted or not.
HINT = re.compile(r"pip install (?:-e )?'?([A-Za-z0-9_.\-/]+)\[([a-z,]+)\]")


def _text_files() -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [f for f in tracked if f.endswith((".py", ".md", ".toml", ".yaml", ".yml", ".sh"))]


def test_the_distribution_is_not_named_like_the_unrelated_pypi_harness():
    assert PROJECT["name"] != "harness"
    # The command and the import package keep the short name.
    assert PROJECT["scripts"]["harness"] == "harness.cli:main"


def test_every_install_hint_names_this_project_and_an_extra_it_declares():
    extras = PROJECT["optional-dependencies"]
    hints = []
    for name in _text_files():
        if name.startswith("results/") or name == "tests/test_install_hints.py":
            continue
        for line_no, line in enumerate((REPO / name).read_text().splitlines(), 1):
            for target, wanted in HINT.findall(line):
                hints.append((f"{name}:{line_no}", target, wanted))
                # "." is a clone; the distribution's own name would be a PyPI install.
                assert target in (".", PROJECT["name"]), f"{name}:{line_no}: {line.strip()}"
                for extra in wanted.split(","):
                    assert extra in extras, f"{name}:{line_no}: no extra {extra!r}"
    sources = {where.split(":")[0] for where, _, _ in hints}
    # The hints the issue found: the docs, the example and both error messages.
    assert {
        "docs/own-loop.md",
        "examples/lightning_loop.py",
        "harness/lightning.py",
        "harness/app/cluster.py",
    } <= sources
