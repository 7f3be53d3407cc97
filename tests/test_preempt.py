"""Preemption through the real CLI: a signal pauses a run after the step in progress, the rerun
resumes mid-epoch and ends with the rows of an unbroken run; an edited checkpoint retrains;
a dead writer's temporaries go; a `--workers` parent forwards the signal and waits.

Every run is a real `python -m harness run` process on synthetic data; signals are sent when
the process has printed a given line (the moment inside the epoch then varies with the
machine's load, which the assertions do not depend on: every landing point must resume
exactly).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.results import paths
from tests.conftest import REPO, run_cli

# 3 epochs of 32 steps in float64 (deterministic on the CPU), the noise meter on: every
# accumulator of a partial epoch (loss, tier-0 checksums, noise sums) shows in the rows.
SUITE = """\
name: preempt
dataset: {{name: synthetic, train_size: 1024, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 3, milestones: [2], factor: 2, batch_size: 32}}
schedules:
  decaying: {{realization: lr}}
  increasing: {{realization: batch}}
training: {{ghost_batch_size: 16, precision: fp64}}
execution: {{eval_batch_size: 64, noise_scale: true}}
experiments:
  - name: grid
    optimizers: [momentum]
    schedules: [{schedules}]
"""
TIMES = ["epoch_time_s", "eval_time_s", "images_per_s"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _suite(folder: Path, schedules: str = "decaying") -> Path:
    path = folder / "preempt.yaml"
    path.write_text(textwrap.dedent(SUITE.format(schedules=schedules)))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", *args, "--device", "cpu", env=ENV)


class Running:
    """A `harness run` process (or `python ARGS` with `python=True`) whose output lines are
    collected as they come."""

    def __init__(self, *args: str, python: bool = False) -> None:
        command = [sys.executable, *args] if python else [sys.executable, "-m", "harness", "run"]
        self.proc = subprocess.Popen(
            command if python else [*command, *args],
            cwd=REPO,
            env={**os.environ, **ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float = 600) -> str | None:
        """The first line matching `pattern` (None if the process ended without one)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                return None
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s: {self.lines}")

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=600)
        self._reader.join()
        return code, "".join(self.lines)


def _rows(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.read_parquet(results / "runs").sort_values("cell_id").reset_index(drop=True)
    curves = pd.read_parquet(results / "curves").sort_values(["cell_id", "epoch"])
    return runs, curves.drop(columns=TIMES).reset_index(drop=True)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The suite and an uninterrupted run of it: the rows every resumed run must equal."""
    folder = tmp_path_factory.mktemp("unbroken")
    suite = _suite(folder)
    done = _run(str(suite), "--results", str(folder / "results"))
    assert done.returncode == 0, done.stderr
    return suite, folder / "results"


def _assert_same_rows(results: Path, reference: Path) -> None:
    runs, curves = _rows(results)
    want_runs, want_curves = _rows(reference)
    pd.testing.assert_frame_equal(curves, want_curves)  # losses, accuracy, checksums, noise
    same = ["cell_id", "status", "epochs", "updates", "planned_updates", "final_test_acc"]
    same += ["best_test_acc", "final_test_loss", "final_train_loss"]
    pd.testing.assert_frame_equal(runs[same], want_runs[same])
    assert runs["error"].isna().all()


def test_signals_pause_mid_epoch_and_the_reruns_equal_an_unbroken_run(unbroken, tmp_path):
    """SIGTERM early in epoch 1, SIGUSR1 inside epoch 2, SIGTERM late in epoch 3: each run
    exits 3 with a mid-epoch checkpoint, the reruns end with the unbroken run's rows."""
    suite, reference = unbroken
    results = tmp_path / "results"
    args = (str(suite), "--results", str(results), "--device", "cpu")
    moments = [  # (line to wait for, then seconds to wait, signal)
        (r"^train ", 0.0, signal.SIGTERM),
        (r"epoch 1/3", 0.3, signal.SIGUSR1),
        (r"epoch 2/3", None, signal.SIGTERM),  # None: 90 % of the last epoch's time
    ]
    pauses = []
    for pattern, delay, sig in moments:
        run = Running(*args)
        line = run.wait_for(pattern)
        assert line is not None, run.finish()[1]
        if delay is None:
            delay = 0.9 * float(re.findall(r"([\d.]+) s$", line.strip())[0])
        time.sleep(delay)
        run.proc.send_signal(sig)
        code, out = run.finish()
        if code == 0:  # the run ended before the signal landed: nothing left to resume
            break
        assert code == 3, out
        assert f"({sig.name}; rerun to continue)" in out and "Traceback" not in out
        pauses += re.findall(r"pause .*: epoch (\d)/3( \+ step (\d+) of 32)?", out)
        state = torch.load(paths.checkpoint_path(results, _cell(results)), weights_only=True)
        assert state["progress"]["status"] == "ok"  # the pause is the run's, not the cell's
        status = run_cli("status", str(suite), "--results", str(results), env=ENV)
        assert "paused" in status.stdout + status.stderr
    assert any(step for _, _, step in pauses), pauses  # at least one stop was mid-epoch
    final = _run(*args[:-2])
    assert final.returncode == 0, final.stderr
    _assert_same_rows(results, reference)
    assert not any((results / "checkpoints").glob("*.pt"))


def _cell(results: Path) -> str:
    return next((results / "checkpoints").glob("*.pt")).stem


def _paused_after_one_epoch(suite: Path, results: Path) -> Path:
    """A real epoch-1 checkpoint (--stop-after 0 pauses at the first epoch boundary)."""
    paused = _run(str(suite), "--results", str(results), "--stop-after", "0")
    assert paused.returncode == 0 and "pause" in paused.stderr, paused.stderr
    return paths.checkpoint_path(results, _cell(results))


# More cases, in-process: tests/test_checkpoint.py (check_progress).
@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ({"epoch": 99, "updates": 123456}, "epoch 99 is outside the plan's 0..3"),
        ({"epoch": 3}, "32 updates after 3 epochs, the plan takes 96"),
        ({"partial": {"epoch": 1, "step": 40}}, "step 40 of epoch 2, which has 32 steps"),
    ],
)
def test_an_edited_checkpoint_retrains_from_scratch_and_its_row_says_why(
    unbroken, tmp_path, edit, why
):
    suite, reference = unbroken
    results = tmp_path / "results"
    checkpoint = _paused_after_one_epoch(suite, results)
    state = torch.load(checkpoint, weights_only=True)
    state["progress"].update(edit)
    torch.save(state, checkpoint)

    rerun = _run(str(suite), "--results", str(results))
    assert rerun.returncode == 0, rerun.stderr
    assert "trained from scratch" in rerun.stderr and why in rerun.stderr
    runs, _ = _rows(results)
    assert runs["status"][0] == "ok" and why in runs["error"][0]
    assert runs["updates"][0] == runs["planned_updates"][0] == 96
    # From scratch means the unbroken run's numbers, not the edited file's.
    pd.testing.assert_frame_equal(_rows(results)[1], _rows(reference)[1])


def test_stale_temporaries_of_a_claimed_cell_are_removed(unbroken, tmp_path):
    """A writer killed at a rename point leaves `.<name>.<random>.tmp`; the next runner that
    claims the cell removes its cell's, and only those."""
    suite, reference = unbroken
    results = tmp_path / "results"
    checkpoint = _paused_after_one_epoch(suite, results)
    cell = checkpoint.stem
    stale = [
        checkpoint.parent / f".{cell}.pt.k1ll3d.tmp",
        checkpoint.parent / f".{cell}.lock.x9y8z7.tmp",
        paths.runs_dir(results) / f".{cell}.parquet.abc123.tmp",
        paths.curves_dir(results) / f".{cell}.parquet.def456.tmp",
    ]
    other = paths.runs_dir(results) / ".0123456789ab.parquet.abc123.tmp"  # not this cell's
    for path in [*stale, other]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    rerun = _run(str(suite), "--results", str(results))
    assert rerun.returncode == 0, rerun.stderr
    assert not any(p.exists() for p in stale)
    assert other.exists()
    _assert_same_rows(results, reference)


def test_sigterm_to_a_workers_parent_pauses_every_worker_and_waits(tmp_path):
    """Two CPU workers each training a cell; SIGTERM to the parent reaches both, each writes a
    mid-epoch checkpoint and releases its claim before the parent exits 3; a rerun finishes."""
    suite = _suite(tmp_path, "decaying, increasing")
    results = tmp_path / "results"
    run = Running(str(suite), "--results", str(results), "--workers", "2")
    for worker in ("cpu#0", "cpu#1"):
        assert run.wait_for(rf"^\[{worker}\] train ") is not None, run.finish()[1]
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGTERM)
    code, out = run.finish()
    assert code == 3, out
    assert out.count("(SIGTERM); rerun to resume") == 2, out
    checkpoints = sorted((results / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2
    # The workers ended before the parent: no claim is held, no worker writes any more.
    assert not list((results / "checkpoints").glob("*.lock"))
    sizes = [p.stat().st_mtime_ns for p in checkpoints]
    time.sleep(0.5)
    assert [p.stat().st_mtime_ns for p in checkpoints] == sizes
    final = _run(str(suite), "--results", str(results))
    assert final.returncode == 0, final.stderr
    runs, _ = _rows(results)
    assert list(runs["status"]) == ["ok", "ok"]
    assert (runs["updates"] == runs["planned_updates"]).all()


def test_sigterm_to_torchrun_pauses_both_processes_at_one_step(unbroken, tmp_path):
    """torchrun forwards SIGTERM to its 2 gloo processes; they vote, stop after the same step,
    rank 0 writes the mid-epoch checkpoint; one process then finishes the cell with the
    unbroken one-process run's numbers (float64 sums in another order: 1e-9)."""
    suite, reference = unbroken
    results = tmp_path / "results"
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "harness", "run", str(suite), "--results", str(results), "--device", "cpu"]
    run = Running(*cmd, python=True)
    assert run.wait_for(r"epoch 1/3") is not None, run.finish()[1]
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGTERM)
    _, out = run.finish()
    assert out.count("(SIGTERM); rerun to resume") == 1, out  # rank 0 speaks for the job
    state = torch.load(paths.checkpoint_path(results, _cell(results)), weights_only=True)
    assert state["progress"]["epoch"] >= 1
    final = _run(str(suite), "--results", str(results))
    assert final.returncode == 0, final.stderr
    (runs, curves), (want_runs, want_curves) = _rows(results), _rows(reference)
    close = ["train_loss", "test_loss", "test_acc"]
    exact = ["epoch", "updates", "order_checksum", "augment_checksum", "label_checksum"]
    pd.testing.assert_frame_equal(curves[close], want_curves[close], rtol=1e-9, atol=1e-12)
    pd.testing.assert_frame_equal(curves[exact], want_curves[exact])
    assert runs["updates"][0] == want_runs["updates"][0]


def test_a_signal_after_the_last_cell_leaves_the_exit_status_alone():
    """`harness run` keeps its handlers after the cells (keep=True): a SIGTERM that lands
    while it prints its summary is recorded, not fatal; without keep the old handler is back."""
    from harness.train.preempt import StopSignals

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        with StopSignals().installed() as plain:
            pass
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        assert not plain.requested
        with StopSignals().installed(keep=True) as kept:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # after the block: the process lives on
        deadline = time.monotonic() + 5
        while not kept.requested and time.monotonic() < deadline:
            time.sleep(0.01)  # a signal is handled between bytecodes, not at once: poll, bounded
        assert kept.requested and kept.name == "SIGTERM"
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
