"""The allocator setting (harness.allocator) moves timings, never a number: the same cell
trained under glibc's defaults and under the harness's setting gives bit-identical curves."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

# Buffers over glibc's 32 MiB mmap ceiling: B = 512 and evaluation batches of 1000 images make
# the first convolution's activations 33 and 65 MB, so both settings are exercised.
SUITE = """
name: alloc
dataset: {name: cifar10, train_size: 1024, test_size: 1000, augment: true}
models:
  small_cnn: {name: small_cnn, width: 16}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, shape: step, milestones: [1], factor: 4, batch_size: 128}
schedules:
  increasing_batch: {realization: batch}
training: {ghost_batch_size: 128}
execution: {max_micro_batch: 512, eval_batch_size: 1000, eval_train_loss: true}
experiments:
  - {name: a, optimizers: [momentum], schedules: [increasing_batch], seeds: [0]}
"""

CURVE_COLUMNS = ["epoch", "lr", "batch_size", "train_loss", "test_loss", "test_acc"]


def _train(tmp_path: Path, malloc: str) -> tuple[list[list[float]], str]:
    suite = tmp_path / "alloc.yaml"
    suite.write_text(SUITE)
    results = tmp_path / f"results-{malloc}"
    env = {"HARNESS_MALLOC": malloc, "OMP_NUM_THREADS": "1"}
    proc = run_cli("run", str(suite), "--results", str(results), "--device", "cpu", env=env)
    assert proc.returncode == 0, proc.stderr
    (curve,) = (results / "curves").glob("*.parquet")
    (run,) = (results / "runs").glob("*.parquet")
    values = pq.read_table(curve, columns=CURVE_COLUMNS).to_pandas().to_numpy().tolist()
    return values, pq.read_table(run, columns=["allocator"]).column(0)[0].as_py()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_tuned_allocator_gives_bit_identical_curves(tmp_path: Path, cifar_root: Path) -> None:
    tuned, tuned_name = _train(tmp_path, "tuned")
    system, system_name = _train(tmp_path, "system")
    assert tuned == system  # every float equal, not close
    assert (tuned_name, system_name) == ("glibc tuned", "glibc default")


def test_unknown_allocator_choice_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli("plan", "suites/smoke.yaml", env={"HARNESS_MALLOC": "jemalloc"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "HARNESS_MALLOC" in proc.stderr and "system" in proc.stderr
