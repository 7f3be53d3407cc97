"""The README's two commands stay true: the install line brings what the test command needs,
and CI runs the very test command the README shows."""

from __future__ import annotations

import re
import subprocess
import sys

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


# ---------------------------------------------------------------------------------------------
# The README is a landing page: short, its commands and its suite real, its links alive, no
# journal of one machine; the reference lives in the documentation site (tests/test_docs.py).

README = REPO / "README.md"
CLAIMS_START = "<!-- claims-table:start (scripts/readme_claims.py writes this block) -->"
CLAIMS_END = "<!-- claims-table:end -->"


def _text() -> str:
    return README.read_text()


def test_the_readme_is_a_landing_page_of_about_150_lines():
    lines = _text().splitlines()
    assert len(lines) <= 160
    sections = [line for line in lines if line.startswith("## ")]
    assert sections[:3] == [
        "## The paper's claims at CPU scale",
        "## The two commands",
        "## Quick start on a CPU (about 5 minutes)",
    ]
    for heading in ("## How long the main job takes", "## A suite in 20 lines", "## Results"):
        assert heading in sections
    # Prose a terminal shows whole; no table cell the width of a paragraph.
    for line in lines:
        limit = 200 if line.startswith("|") else 100
        assert len(line) <= limit or line.startswith("pip install"), line


def test_the_claims_section_is_the_generated_table_of_the_committed_rows():
    body = _text().split("## The paper's claims at CPU scale\n", 1)[1].split("\n## ", 1)[0]
    assert body.strip().startswith(CLAIMS_START) and body.strip().endswith(CLAIMS_END)
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_claims.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_no_machine_local_asides_or_dated_measurements():
    text = _text()
    for aside in ("this VM", "this machine", "on this", "2-core VM", "skip here", "measured 20"):
        assert aside not in text, aside
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text)


def test_the_quick_start_uses_the_smoke_suite_and_its_plan_runs(tmp_path):
    from tests.conftest import run_cli

    quick = _bash_blocks()[2]
    commands = [line.split("#")[0].strip() for line in quick.splitlines()]
    assert "S='experiments.0.seeds=[0,1,2]'" in commands
    assert 'harness run suites/smoke.yaml --device cpu --set "$S"' in commands
    assert 'harness report suites/smoke.yaml --set "$S"' in commands
    plan = run_cli("plan", "suites/smoke.yaml", "--set", "experiments.0.seeds=[0,1,2]")
    assert plan.returncode == 0, plan.stderr
    assert "increasing_batch" in plan.stdout and "seeds 0, 1, 2" in plan.stdout


def test_the_readmes_suite_is_valid_and_about_20_lines(tmp_path):
    from harness.config.suite import load_suite

    blocks = re.findall(r"```yaml\n(.*?)```", _text(), flags=re.S)
    assert len(blocks) == 1
    assert len(blocks[0].splitlines()) <= 22
    path = tmp_path / "my-first.yaml"
    path.write_text(blocks[0])
    suite = load_suite(path)
    assert {c.label.split("/")[2] for c in suite.cells} == {
        "decaying_lr",
        "hybrid",
        "increasing_batch",
    }
    assert len(suite.cells) == 6  # 3 schedules x seeds 0 and 1


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\((?!https?:)([^)#]+)", _text())
    assert len(links) > 10
    for link in links:
        assert (REPO / link).exists(), link


def test_the_readme_states_no_result_number_the_reports_hold():
    """Results are linked, never retyped: a percentage in the README would be a copy."""
    assert not re.search(r"\d+(?:\.\d+)? ?%", _text())
