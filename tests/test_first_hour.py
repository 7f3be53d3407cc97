"""A new user's first hour (issue 40), through the real CLI: a fresh clone's first run trains
into a folder of its own and leaves `git status` clean; the CLI's polish."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, SUITES, run_cli

TINY = """\
name: tiny
dataset: {name: synthetic, train_size: 128, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.1, momentum: 0.9}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
    seeds: [0]
"""


def _git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this commit (the code under test is still this checkout's: the tests'
    PYTHONPATH), as a user gets it."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    head = _git("rev-parse", "HEAD", cwd=REPO).strip()
    path = tmp_path / "clone"
    _git("clone", "--quiet", "--no-checkout", str(REPO), str(path), cwd=tmp_path)
    _git("checkout", "--quiet", head, cwd=path)
    return path


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_a_fresh_clone_trains_into_its_own_folder_and_git_status_stays_clean(clone, tmp_path):
    env = {"PYTHONPATH": str(REPO), "HARNESS_RESULTS": ""}  # the default root, ./runs
    # The committed smoke rows are the project's evidence, not this user's runs: all pending.
    status = _ok(run_cli("status", "suites/smoke.yaml", cwd=clone, env=env))
    assert "smoke: 3 pending" in status.stdout, status.stdout
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    run = _ok(run_cli("run", str(suite), "--device", "cpu", cwd=clone, env=env))
    assert "2 trained" in run.stderr, run.stderr
    assert len(list((clone / "runs" / "tiny" / "runs").glob("*.parquet"))) == 2
    # The run ends with the next command to type, and that command reports the user's run.
    assert "harness report --results" not in run.stderr  # report takes the folder itself
    assert "harness report runs/tiny" in run.stderr, run.stderr
    # A bare report reads only the user's own runs: no committed suite appears.
    report = _ok(run_cli("report", "--format", "csv", cwd=clone, env=env))
    assert "tiny" in report.stdout and "smoke" not in report.stdout, report.stdout
    _ok(run_cli("report", "runs/tiny", "--format", "csv", cwd=clone, env=env))
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""


def test_harness_results_moves_the_default_root(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    root = tmp_path / "mine"
    status = _ok(run_cli("status", str(suite), env={"HARNESS_RESULTS": str(root)}))
    assert str(root / "tiny") in status.stderr, status.stderr


# --- 40.9: CLI polish -------------------------------------------------------------------------


def test_version_prints_the_package_version():
    from harness.version import __version__

    result = _ok(run_cli("--version"))
    assert result.stdout.strip() == f"harness {__version__}"


@pytest.mark.parametrize("command", ["plan", "run", "status", "check"])
def test_usage_names_the_suite_argument_suite(command):
    result = _ok(run_cli(command, "--help", env={"COLUMNS": "100"}))
    usage = next(line for line in result.stdout.splitlines() if "Usage:" in line)
    assert usage.rstrip().endswith("SUITE") or " SUITE " in usage, usage
    assert "{" not in usage, usage


def test_help_text_is_wrapped_by_the_terminal_not_by_the_docstring():
    # The docstring breaks "each cell" / "is trained" across source lines; a wide terminal
    # shows the sentence whole.
    result = _ok(run_cli("run", "--help", env={"COLUMNS": "200"}))
    assert "each cell is trained data-parallel by the N processes" in result.stdout
    narrow = _ok(run_cli("report", "--help", env={"COLUMNS": "200"}))
    assert "shown apart, with a warning. `harness report SUITE` shows only" in narrow.stdout


def test_a_misspelt_top_level_key_is_named_not_only_the_missing_one(tmp_path):
    suite = tmp_path / "typo.yaml"
    suite.write_text((SUITES / "smoke.yaml").read_text().replace("\nexperiments:", "\nexperiment:"))
    result = run_cli("plan", str(suite))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "unknown key 'experiment'" in line and "did you mean 'experiments'" in line, line
