"""Data parallelism on the CPU (gloo): torchrun with 2 processes trains a cell exactly as one
process with gradient accumulation does, writes its rows once, and resumes with any N.

The suite is tests' version of suites/fingerprint.yaml: float64, batch 48 -> 96 with ghost
batches of 16, an lr drop, momentum and weight decay, augmentation, evaluation every epoch.
Over 2 processes a step of 48 (3 ghost slices) runs unevenly as 32 + 16 examples, a step of
96 as 48 + 48; with micro-batches of 16 a process runs 1 to 3 of them (so the DDP no_sync
path is taken). The gradient noise meter runs in the
2-process CLI run: it must change no number, and pools the processes' small batches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.config.suite import load_suite
from harness.errors import UserError
from harness.results.store import read_curves, read_runs

SUITE = """\
name: ddp
dataset: {name: synthetic, train_size: 256, test_size: 128, augment: true}
models: {tiny: {name: small_cnn, width: 4}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 3, shape: step, milestones: [1, 2], factor: 2, batch_size: 48}
schedules: {hybrid: {realization: hybrid, batch_drops: 1}}
training: {ghost_batch_size: 16, weight_decay: 5.0e-4, drop_last: true, precision: fp64}
execution: {max_micro_batch: 32, eval_batch_size: 48}
experiments: [{name: ddp, optimizers: [momentum], schedules: [hybrid], seeds: [0]}]
"""

HERE = Path(__file__).parent
# Tight: the two runs differ only in the order float64 sums are taken.
RTOL, ATOL = 1e-9, 1e-12


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return env


def _torchrun(n: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={n}", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def _harness(*args: str, n: int = 1) -> subprocess.CompletedProcess[str]:
    if n > 1:
        return _torchrun(n, "-m", "harness", *args)
    cmd = [sys.executable, "-m", "harness", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "ddp.yaml"
    path.write_text(SUITE)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


PRECISE = SUITE.replace(
    "precision: fp64}", "precision: fp64, bn_stats: precise, bn_stats_images: 100}"
)


@pytest.mark.parametrize("text", [SUITE, PRECISE], ids=["ema", "precise"])
def test_two_gloo_processes_take_the_updates_of_one_process(text: str, tmp_path: Path) -> None:
    """Precise statistics too: 100 images in evaluation batches of 48 are 48 + 4 images on
    rank 0 and 48 on rank 1, whose moments all-reduced give one process's statistics."""
    suite = tmp_path / "ddp.yaml"
    suite.write_text(text)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    job = str(HERE / "ddp_job.py")
    alone = subprocess.run(
        [sys.executable, job, str(suite), str(one), "32"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert alone.returncode == 0, alone.stderr
    together = _torchrun(2, job, str(suite), str(two), "16")
    assert together.returncode == 0, together.stderr
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    for name in a:  # parameters and batch-norm running statistics alike
        if a[name].is_floating_point():
            torch.testing.assert_close(b[name], a[name], rtol=RTOL, atol=ATOL, msg=name)
        else:
            assert torch.equal(a[name], b[name]), name
    assert any(float(a[n].abs().sum()) > 0 for n in a if "running_mean" in n)


def _curves(folder: Path) -> pd.DataFrame:
    return read_curves(folder).sort_values("epoch").reset_index(drop=True)


COMPARED = ["train_loss", "test_loss", "test_acc", "applied_lr", "applied_batch_size"]
EXACT = ["updates", "order_checksum", "augment_checksum", "label_checksum"]


def test_torchrun_run_writes_one_row_equal_to_one_process_and_resumes_with_any_n(
    suite: Path, tmp_path: Path
) -> None:
    alone = _harness("run", str(suite), "--results", str(tmp_path / "one"), "--device", "cpu")
    assert alone.returncode == 0, alone.stderr
    together = tmp_path / "two"
    # With the noise meter on (it must change no number): per rank a step of 64 is 2 x 16.
    run = _harness(
        "run", str(suite), "--results", str(together), "--device", "cpu",
        "--max-micro-batch", "16", "--set", "execution.noise_scale=true", n=2,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("1 trained") == 1  # rank 0 speaks for the job
    rows = read_runs(together)
    assert len(rows) == 1 and rows["status"].iloc[0] == "ok"
    assert rows["world_size"].iloc[0] == 2 and rows["devices"].iloc[0] == "cpu,cpu"
    assert read_runs(tmp_path / "one")["world_size"].iloc[0] == 1
    expected, got = _curves(tmp_path / "one"), _curves(together)
    assert len(got) == 3
    pd.testing.assert_frame_equal(got[COMPARED], expected[COMPARED], rtol=RTOL, atol=ATOL)
    pd.testing.assert_frame_equal(got[EXACT], expected[EXACT])
    # Every micro-batch of 16 of both processes is a small-batch sample, pooled: B_simple is
    # measured in every epoch (test_torchrun_makes_the_adaptive_decisions_of_one_process
    # compares it with one process's).
    assert got["noise_b_simple"].notna().all() and (got["noise_small_batch"] == 16).all()

    # Paused by 2 processes after one epoch, finished by 1: the same run.
    resumed = tmp_path / "resumed"
    first = _harness(
        "run", str(suite), "--results", str(resumed), "--device", "cpu", "--stop-after", "0",
        n=2,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "paused" in first.stderr and read_runs(resumed).empty
    second = _harness("run", str(suite), "--results", str(resumed), "--device", "cpu")
    assert second.returncode == 0, second.stderr
    got = _curves(resumed)
    pd.testing.assert_frame_equal(got[COMPARED], expected[COMPARED], rtol=RTOL, atol=ATOL)
    pd.testing.assert_frame_equal(got[EXACT], expected[EXACT])


ADAPTIVE = (
    SUITE.replace(
        "schedule: {epochs: 3, shape: step, milestones: [1, 2], factor: 2, batch_size: 48}",
        "schedule: {epochs: 4, shape: step, milestones: [2], factor: 2, batch_size: 32}",
    )
    .replace(
        "{hybrid: {realization: hybrid, batch_drops: 1}}",
        "{adaptive: {realization: adaptive, b_max: 128, target: 2.0}}",
    )
    .replace("schedules: [hybrid]", "schedules: [adaptive]")
)


def test_torchrun_makes_the_adaptive_decisions_of_one_process(tmp_path: Path) -> None:
    """An adaptive batch over 2 gloo processes: each process's micro-batches of 16 are
    small-batch samples (its last one read before the all-reduce by the meter's DDP hook, a
    share of one micro-batch included), pooled, so B_simple and every decision are one
    process's (steps of 32 run as 16 + 16, of 48 as 32 + 16)."""
    suite = tmp_path / "adaptive.yaml"
    suite.write_text(ADAPTIVE)
    flags = ("--device", "cpu", "--max-micro-batch", "16")
    alone = _harness("run", str(suite), "--results", str(tmp_path / "one"), *flags)
    assert alone.returncode == 0, alone.stderr
    together = _harness("run", str(suite), "--results", str(tmp_path / "two"), *flags, n=2)
    assert together.returncode == 0, together.stderr
    expected, got = _curves(tmp_path / "one"), _curves(tmp_path / "two")
    decided = ["decision_batch_size", "batch_size", "updates"]
    pd.testing.assert_frame_equal(got[decided], expected[decided])
    assert expected["decision_batch_size"].iloc[1:].notna().all()
    assert expected["batch_size"].nunique() > 1  # the batch did grow
    measured = ["decision_b_simple", "noise_b_simple", "noise_trace", "noise_grad_sq"]
    pd.testing.assert_frame_equal(got[measured], expected[measured], rtol=1e-7, atol=0)
    pd.testing.assert_frame_equal(got[COMPARED], expected[COMPARED], rtol=RTOL, atol=ATOL)


def test_a_batch_that_cannot_be_split_over_the_processes_is_refused(
    suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.app.runner import run_suite

    # 4 processes: B = 48 is three ghost batches of 16, not one per process.
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match=r"batch size 48 is not 4 or more whole ghost batches"):
        run_suite(load_suite(suite), results=tmp_path / "r", device="cpu")
    assert not (tmp_path / "r").exists()


def test_torchrun_on_an_image_folder_equals_one_process(tmp_path: Path) -> None:
    """ImageNet's path: each process decodes only its share of every step (keys decide the
    crops), and the run is the one-process run, tier-0 checksums included."""
    from tests.test_imagenet_run import make_folder, write_suite

    root = make_folder(tmp_path / "data")
    suite = write_suite(tmp_path, workers=0)
    common = ["--device", "cpu", "--data", str(root), "--set", "experiments.0.models=[resnet]"]
    # B = 12 is 3 ghost batches of 4: shares of 8 and 4 images (uneven), then 24 (12 + 12).
    common += ["--set", "training.precision=fp64", "--set", "schedule.batch_size=12"]
    alone = _harness("run", str(suite), "--results", str(tmp_path / "one"), *common)
    assert alone.returncode == 0, alone.stderr
    together = tmp_path / "two"
    run = _harness("run", str(suite), "--results", str(together), *common, n=2)
    assert run.returncode == 0, run.stderr
    rows = read_runs(together)
    assert len(rows) == 2 and set(rows["world_size"]) == {2}
    key = ["cell_id", "epoch"]
    expected = read_curves(tmp_path / "one").sort_values(key).reset_index(drop=True)
    got = read_curves(together).sort_values(key).reset_index(drop=True)
    assert len(got) == 4 and set(got["applied_batch_size"]) == {12, 24}
    pd.testing.assert_frame_equal(got[COMPARED], expected[COMPARED], rtol=RTOL, atol=ATOL)
    pd.testing.assert_frame_equal(got[EXACT], expected[EXACT])
