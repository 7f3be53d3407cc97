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


# --- 40.6: plan says each thing once ----------------------------------------------------------


def test_plan_prints_the_legend_once_and_one_table_per_recipe_for_its_seeds():
    result = _ok(run_cli("plan", str(SUITES / "cifar.yaml"), env={"COLUMNS": "200"}))
    out = " ".join(result.stdout.split())
    assert out.count("Appendix A") == 1, out
    # 40 cells, two seeds each: 20 tables, each naming both seeds' cells.
    assert out.count("seeds 0, 1: cells ") == 20, out
    assert out.count("updates in 200 epochs") == 20


def test_plan_estimate_without_fitting_rows_says_no_estimate_and_the_fix_once(tmp_path):
    import pandas as pd

    # Bench rows of a small_cnn only: no cifar.yaml cell (WRN-16-4) has an estimate.
    bench = tmp_path / "bench"
    bench.mkdir()
    rows = pd.concat(pd.read_parquet(f) for f in (REPO / "results" / "bench").glob("*.parquet"))
    rows[rows["model"] == "small_cnn"].to_parquet(bench / "rows.parquet")
    args = ("plan", str(SUITES / "cifar.yaml"), "--estimate", "--bench", str(bench))
    out = _ok(run_cli(*args, env={"COLUMNS": "300"})).stdout
    assert "one worker: 0 s" not in out
    assert "no estimate on" in out and "for any of the 40 cells" in out, out
    assert out.count("harness bench --model wrn16_4") == 1, out


# --- 40.7: check compares the recipes before it trains ----------------------------------------


def test_check_stops_before_training_on_a_changed_recipe_and_shows_what_it_compared(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY + "check: {final_test_acc: 0.5, final_train_loss: 1.0}\n")
    baseline = tmp_path / "baseline"
    _ok(run_cli("run", str(suite), "--results", str(baseline), "--device", "cpu"))

    same = _ok(run_cli("check", str(suite), "--baseline", str(baseline), "--device", "cpu",
                       cwd=tmp_path, env={"HARNESS_RESULTS": ""}))  # fmt: skip
    # What was compared, with a tolerance, per cell; the exact ones counted; the run's folder.
    assert same.stdout.count("final_test_acc") == 2 and "exact comparisons" in same.stdout
    (folder,) = (tmp_path / "runs" / "check").iterdir()
    assert f"this run's rows: runs/check/{folder.name}" in same.stdout, same.stdout
    assert len(list((folder / "runs").glob("*.parquet"))) == 2

    changed = run_cli("check", str(suite), "--baseline", str(baseline), "--device", "cpu",
                      "--set", "optimizers.momentum.lr=0.2", cwd=tmp_path)  # fmt: skip
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "stopped before training" in changed.stdout
    assert changed.stdout.count("recipe changed |") == 2, changed.stdout
    assert "optimizer.lr 0.1" in changed.stdout and "optimizer.lr 0.2" in changed.stdout
    assert "train " not in changed.stderr  # no cell started
    assert len(list((tmp_path / "runs" / "check").iterdir())) == 1  # no new run folder


# --- 40.10: examples treat a user's mistake as the CLI does -----------------------------------


def test_own_loop_example_with_a_batch_above_the_training_set_is_one_line(cifar_root):
    import os
    import sys

    args = ["--epochs", "3", "--milestones", "1", "2", "--train-size", "2000"]
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "own_loop.py"), *args],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "HARNESS_DATA": str(cifar_root)},
    )  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, result.stderr
    assert line.startswith("error: b_max:") and "set b_max <= 2000" in line, line


def test_exit_on_user_error_is_one_line_and_status_2_for_any_script(tmp_path):
    import sys

    script = tmp_path / "mine.py"
    script.write_text(
        "import harness\n"
        "with harness.exit_on_user_error():\n"
        "    harness.BaseSchedule(epochs=10, milestones=(20,))\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


# --- 40.2: a suite of days says so before it trains -------------------------------------------


def test_a_suite_of_days_on_this_device_says_so_in_one_line_before_training(tmp_path):
    import os
    import signal
    import sys

    # The paper's CIFAR-10 suite on a CPU: weeks. The line comes before any data loads; the
    # run is stopped once it has been said (it would go on training).
    args = [sys.executable, "-m", "harness", "run", str(SUITES / "cifar.yaml"), "--device", "cpu",
            "--results", str(tmp_path / "out"), "--data", str(tmp_path / "no-data")]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
    )  # fmt: skip
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "take about" in line or line.startswith("error:"):
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (line,) = [s for s in seen if "take about" in s]
    assert line.startswith("warning: 40 cells to train here take about") and "days" in line
    assert "suites/smoke.yaml" in line and "--estimate" in line


def test_a_short_suite_says_nothing_of_its_duration(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    run = _ok(run_cli("run", str(suite), "--device", "cpu", "--results", str(tmp_path / "r")))
    assert "take about" not in run.stderr and "2 trained" in run.stderr


# --- 40.3: progress inside an epoch, with an ETA, on a terminal only --------------------------


def _epoch_record(cell, epoch: int):
    from harness.core.epoch_record import EpochRecord

    phase = cell.plan.phases[0]
    return EpochRecord(
        cell_id=cell.cell_id, epoch=epoch, updates=4 * epoch, lr=phase.lr,
        batch_size=phase.batch_size, momentum=phase.momentum, noise_scale=phase.noise_scale,
        train_loss=1.0, test_loss=1.0, test_acc=0.5, epoch_time_s=1.0, eval_time_s=0.1,
        images_per_s=100.0,
    )  # fmt: skip


def _drive(console, tmp_path):
    """A run's console through two cells: steps ticked, an epoch ended, each cell stopped."""
    from harness.app.console import RunConsole
    from harness.app.jobs import train_job
    from harness.config.suite import load_suite

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    cells = load_suite(suite).cells
    say = RunConsole(console=console)
    say.plan_suite(cells)
    for cell in cells:
        say.start(cell, resumed=False)
        for _ in range(3):
            say.tick()
        say.epoch(train_job(cell), _epoch_record(cell, 1))
        say.tick()
        say.stop()
    return say, cells


def test_progress_on_a_terminal_shows_the_cell_and_the_suite_with_an_eta(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    say, cells = _drive(Console(file=out, force_terminal=True, width=160), tmp_path)
    text = out.getvalue()
    assert say.live
    assert f"train {cells[0].cell_id}" in text and "suite" in text and "eta" in text, text
    # Images, counted per cell: its first epoch (4 steps of 32) and one step of the second
    # epoch's batch (32 when the lr decays, 64 when the batch grows instead).
    assert say.suite_done == (128 + 32) + (128 + 64)


def test_progress_without_a_terminal_is_the_epoch_lines_only(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    monkeypatch.delenv("CI", raising=False)
    out = io.StringIO()
    say, _ = _drive(Console(file=out, force_terminal=False, width=160), tmp_path)
    lines = out.getvalue().splitlines()
    assert not say.live
    assert [line.split()[0] for line in lines] == ["train", "epoch", "train", "epoch"], lines
    assert "\x1b" not in out.getvalue() and "eta" not in out.getvalue()


def test_run_on_a_terminal_draws_progress_and_a_piped_run_stays_plain(tmp_path):
    import os
    import pty
    import sys

    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(REPO), COLUMNS="160")
    piped = _ok(run_cli("run", str(suite), "--device", "cpu", "--results",
                        str(tmp_path / "piped"), env={"COLUMNS": "160"}))  # fmt: skip
    assert "\x1b[" not in piped.stderr and "eta" not in piped.stderr
    assert piped.stderr.count("  epoch ") == 4  # two cells, two epochs: as before

    leader, follower = pty.openpty()
    args = [sys.executable, "-m", "harness", "run", str(suite), "--device", "cpu",
            "--results", str(tmp_path / "tty")]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait()
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "eta" in text and "suite" in text, text
    assert "2 trained" in text
