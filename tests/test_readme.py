"""The README's two commands stay true: the install line brings what the test command needs,
and CI runs the very test command the README shows."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO


def _bash_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_install_line_installs_the_test_extra():
    install = _bash_blocks()[0]
    extras = re.search(r"pip install -e '\.\[([a-z,]+)\]'", install)
    assert extras, install
    wanted = set(extras.group(1).split(","))
    assert "test" in wanted
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", dep)[0] for extra in wanted for dep in declared[extra]}
    # lightning: tests/test_lightning.py runs real Lightning, not a skip, in CI.
    assert {"pytest", "pytest-benchmark", "hypothesis", "lightning"} <= names


def test_ci_runs_the_readmes_test_command():
    command = _bash_blocks()[1].strip()
    assert command.startswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]
