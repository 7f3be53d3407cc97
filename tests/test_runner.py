"""`run_suite` in-process on synthetic data: rows, skip, force, failure, divergence, bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.app.runner import run_suite
from harness.config.suite import load_suite
from harness.errors import UserError
from harness.results import lock, paths, store
from tests.conftest import SUITES
from tests.fakes import FailingConsole, other_runner_holding

SUITE = """\
name: mini
dataset: {name: synthetic, train_size: 128, test_size: 32}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
  wild: {kind: momentum, lr: 1.0e+6, momentum: 0.9}
schedule: {epochs: 3, milestones: [2], factor: 2, batch_size: 32}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [decaying, increasing]
  - name: unstable
    optimizers: [wild]
    schedules: [decaying]
"""


@pytest.fixture
def suite(tmp_path: Path):
    path = tmp_path / "mini.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return load_suite(path)


def test_rows_skip_and_force(suite, tmp_path):
    results = tmp_path / "results"
    first = run_suite(suite, results=results, device="cpu")
    assert len(first.ran) == 3 and not first.skipped and not first.failed
    runs = pd.read_parquet(results / "runs")
    assert sorted(runs["cell_id"]) == sorted(c.cell_id for c in suite.cells)
    assert dict(zip(runs["optimizer"], runs["status"])) == {"momentum": "ok", "wild": "diverged"}
    ok = runs[runs["status"] == "ok"]
    assert (ok["updates"] == ok["planned_updates"]).all()
    assert set(runs["data_source"]) == {"synthetic"}
    assert not any((results / "checkpoints").glob("*.pt"))

    again = run_suite(suite, results=results, device="cpu")
    assert sorted(again.skipped) == sorted(first.ran) and not again.ran
    assert len(pd.read_parquet(results / "runs")) == 3

    forced = run_suite(suite, results=results, device="cpu", force=True, only="decaying")
    assert len(forced.ran) == 2  # both decaying cells, the diverged one included
    assert len(pd.read_parquet(results / "runs")) == 3  # replaced, not duplicated


def test_diverged_cell_keeps_its_partial_curve(suite, tmp_path):
    run_suite(suite, results=tmp_path, device="cpu", only="unstable")
    row = pd.read_parquet(tmp_path / "runs").iloc[0]
    curves = pd.read_parquet(tmp_path / "curves")
    assert row["status"] == "diverged" and "training loss" in row["error"]
    assert len(curves) == row["epochs"] <= 3


def test_out_of_memory_fails_the_cell_names_the_cure_and_resumes(suite, tmp_path):
    """An OOM once epoch 1 is checkpointed writes a failed row, keeps the checkpoint; the next
    run finishes it."""
    runs_out = FailingConsole(
        lambda job, row: (
            torch.OutOfMemoryError("CUDA out of memory (simulated)") if row.epoch == 1 else None
        )
    )
    summary = run_suite(
        suite, results=tmp_path, device="cpu", only="grid/momentum/decaying", console=runs_out
    )
    assert len(summary.failed) == 1
    cell_id = summary.failed[0]
    row = pd.read_parquet(tmp_path / "runs").iloc[0]
    assert row["status"] == "failed" and row["epochs"] == 1
    assert cell_id in row["error"] and "max_micro_batch" in row["error"]
    assert paths.checkpoint_path(tmp_path, cell_id).exists()

    retried = run_suite(suite, results=tmp_path, device="cpu", only="grid/momentum/decaying")
    assert retried.ran == [cell_id]  # a failed cell is not finished
    row = pd.read_parquet(tmp_path / "runs").iloc[0]
    assert row["status"] == "ok" and row["epochs"] == 3
    assert row["updates"] == row["planned_updates"]
    assert not paths.checkpoint_path(tmp_path, cell_id).exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"only": "no-such-cell"}, "--only 'no-such-cell': matches no cell"),
        ({"max_micro_batch": 24}, "--max-micro-batch 24: must be a positive multiple"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_bad_options_are_user_errors(suite, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        run_suite(suite, results=tmp_path, **kwargs)
    assert not (tmp_path / "runs").exists()


def test_imagenet_without_its_folder_is_one_line_naming_it(tmp_path):
    # ImageNet trains where its folder exists (tests/test_imagenet_run.py); here it does not.
    with pytest.raises(UserError, match=r"no ImageNet folder at .*imagenet"):
        run_suite(
            load_suite(SUITES / "imagenet.yaml"), results=tmp_path, device="cpu", data=tmp_path
        )


def _lock(results: Path, cell_id: str, host: str, pid: int) -> Path:
    """A leftover claim note, as a killed runner leaves it; it holds no lock."""
    path = lock.lock_path(results, cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{host} {pid}")
    return path


def test_cells_claimed_by_another_runner_are_passed_over(suite, tmp_path):
    """A live runner's claim (here two live processes, each holding one cell) is kept."""
    grid = [c for c in suite.cells if c.experiment == "grid"]
    with (
        other_runner_holding(tmp_path, grid[0].cell_id),
        other_runner_holding(tmp_path, grid[1].cell_id),
    ):
        here = lock.lock_path(tmp_path, grid[0].cell_id)
        there = lock.lock_path(tmp_path, grid[1].cell_id)
        summary = run_suite(suite, results=tmp_path, device="cpu", only="grid")
        assert sorted(summary.busy) == sorted(c.cell_id for c in grid)
        assert not summary.ran and not (tmp_path / "runs").exists()
        assert here.exists() and there.exists()  # other runners' locks are not ours to remove


def test_a_killed_runners_lock_is_taken_over(suite, tmp_path):
    cell = next(c for c in suite.cells if c.experiment == "grid")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs
    lock = _lock(tmp_path, cell.cell_id, socket.gethostname(), dead.pid)
    summary = run_suite(suite, results=tmp_path, device="cpu", only=cell.cell_id)
    assert summary.ran == [cell.cell_id]
    assert not lock.exists()
    assert store.cell_status(tmp_path, cell.cell_id) == "ok"


def test_any_error_in_a_cell_is_that_cells_failed_row(suite, tmp_path):
    """A bug in one cell: a failed row with a one-line message and a traceback log; the other
    cells of the suite still train, and the next run retries the failed one."""
    victim = next(c for c in suite.cells if c.label == "grid/momentum/decaying/seed0")
    broken_for_one_cell = FailingConsole(
        lambda job, row: (
            RuntimeError("simulated bug\nwith a second line")
            if job.cell_id == victim.cell_id
            else None
        )
    )
    summary = run_suite(
        suite, results=tmp_path, device="cpu", only="grid", console=broken_for_one_cell
    )
    assert summary.failed == [victim.cell_id] and len(summary.ran) == 1
    runs = pd.read_parquet(tmp_path / "runs").set_index("cell_id")
    error = runs.loc[victim.cell_id, "error"]
    assert runs.loc[victim.cell_id, "status"] == "failed"
    assert "RuntimeError: simulated bug with a second line" in error and "\n" not in error
    log = tmp_path / "logs" / f"{victim.cell_id}.log"
    assert str(log) in error and "Traceback" in log.read_text()

    retried = run_suite(suite, results=tmp_path, device="cpu", only="grid")
    assert retried.ran == [victim.cell_id]
    assert store.cell_status(tmp_path, victim.cell_id) == "ok"


def test_an_unwritable_results_folder_is_one_line_before_the_data_loads(tmp_path, cli):
    suite = tmp_path / "mini.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("run", str(suite), "--results", str(blocker / "results"), "--device", "cpu")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert f"{blocker / 'results'}: the results folder is not writable" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_failed_cell_makes_the_command_exit_1_with_a_summary(tmp_path, cli):
    """Through the CLI: a planted unreadable checkpoint fails one cell; the suite finishes."""
    suite = tmp_path / "mini.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    cell = next(c for c in load_suite(suite).cells if c.experiment == "grid")
    results = tmp_path / "results"
    bad = paths.checkpoint_path(results, cell.cell_id)
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    out = cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert out.returncode == 1, out.stderr
    assert f"fail  {cell.cell_id}" in out.stderr and f"{bad}: unreadable checkpoint" in out.stderr
    assert "mini: 2 trained, 0 already finished, 1 failed (rerun to retry them)" in out.stderr
    assert "Traceback" not in out.stderr


def test_stop_after_starts_no_cell_once_the_time_is_up(suite, tmp_path):
    """--stop-after 0: the first cell trains one epoch and pauses (a run always makes
    progress), no other cell starts, no row is written; a later run finishes every cell."""
    results = tmp_path / "results"
    stopped = run_suite(suite, results=results, device="cpu", stop_after=0.0)
    assert not stopped.ran and len(stopped.paused) == 1
    assert len(stopped.not_started) == len(suite.cells) - 1
    assert "not started" in stopped.line()
    assert store.read_runs(results).empty
    later = run_suite(suite, results=results, device="cpu")
    assert len(later.ran) == len(suite.cells)


def test_a_paused_cell_writes_no_row_and_resumes(suite, tmp_path):
    """A cell paused by --stop-after leaves its checkpoint and no row; the rerun resumes it."""
    results = tmp_path / "results"
    # No time left: the cell trains its one epoch and pauses.
    first = run_suite(suite, results=results, device="cpu", only="grid/*decaying*", stop_after=0.0)
    assert len(first.paused) == 1 and not first.ran
    assert store.read_runs(results).empty
    assert paths.checkpoint_path(results, first.paused[0]).exists()
    second = run_suite(suite, results=results, device="cpu", only="grid/*decaying*")
    assert second.ran == first.paused
    curves = pd.read_parquet(results / "curves")
    assert sorted(curves["epoch"]) == [1, 2, 3]


def test_a_damaged_run_file_is_moved_aside_and_its_cell_trains_again(suite, tmp_path, cli):
    """A truncated Parquet row: `run` keeps the bytes (renamed) and retrains the cell; `report`
    skips it with a one-line warning instead of a pyarrow traceback."""
    cell = next(c for c in suite.cells if c.label == "grid/momentum/decaying/seed0")
    run_suite(suite, results=tmp_path, device="cpu", only="grid")
    damaged = paths.run_file(tmp_path, cell.cell_id)
    damaged.write_bytes(damaged.read_bytes()[:40])

    report = cli("report", str(tmp_path), "--format", "csv")
    assert report.returncode == 0, report.stderr
    assert f"warning: {damaged}: not a readable results file" in report.stderr
    assert "Traceback" not in report.stderr

    again = run_suite(suite, results=tmp_path, device="cpu", only="grid")
    assert again.ran == [cell.cell_id] and len(again.skipped) == 1
    aside = list(damaged.parent.glob(f"{damaged.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].stat().st_size == 40
    assert store.cell_status(tmp_path, cell.cell_id) == "ok"
