"""One meaning of `--results DIR` (the suite's own folder) and "not found" messages that name
the path looked at and the command that writes it. Reads the committed results/smoke rows."""

from __future__ import annotations

import shutil

from tests.conftest import REPO, SUITES, run_cli

SMOKE_ROWS = REPO / "results" / "smoke"


def _copy_rows(dest):
    for part in ("runs", "curves"):
        shutil.copytree(SMOKE_ROWS / part, dest / part)
    return dest


def test_report_takes_a_suite_folder_or_a_root_of_them(tmp_path):
    folder = _copy_rows(tmp_path / "root" / "smoke")
    for arg in (folder, folder.parent):
        result = run_cli("report", str(arg), "--format", "csv")
        assert result.returncode == 0, result.stderr
        assert "sec5.1" in result.stdout or "smoke" in result.stdout


def test_report_of_a_suite_subfolder_that_run_never_made_names_the_real_folder(tmp_path):
    # `harness run SUITE --results DIR` writes DIR/runs, not DIR/<suite>/runs.
    folder = _copy_rows(tmp_path / "out")
    result = run_cli("report", str(folder / "smoke"))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert str(folder / "smoke") in line
    assert f"--results {folder}" in line


def test_report_of_an_empty_folder_names_it_and_the_command(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "harness run SUITE --results" in result.stderr


def test_status_of_a_missing_folder_says_so(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("status", str(SUITES / "smoke.yaml"), "--results", str(missing))
    assert result.returncode == 0, result.stderr
    assert str(missing) in result.stderr and "--results" in result.stderr
    assert "pending" in result.stdout


def test_status_with_results_reads_the_folder_run_wrote(tmp_path):
    folder = _copy_rows(tmp_path / "smoke-rows")
    result = run_cli("status", str(SUITES / "smoke.yaml"), "--results", str(folder))
    assert result.returncode == 0, result.stderr
    assert "pending" not in result.stdout and "done" in result.stdout
