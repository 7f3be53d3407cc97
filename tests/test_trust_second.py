"""Trust, second pass (issue 31 items 3, 5, 6; issue 23 item 5): inputs that hung, failed
every rerun, or said something misleading now get one line and exit 2, through the real CLI.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.config.suite import MAX_CELLS, load_suite
from harness.errors import UserError
from harness.train.checkpoint import CheckpointError, Progress, save_checkpoint, write_failure

SUITE = """\
name: trust
dataset: {name: synthetic, train_size: 256, test_size: 64}
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
    seeds: [0, 1]
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "trust.yaml"
    path.write_text(SUITE)
    return path


def one_line_error(result, *needles: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback), holding `needles`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- 31.3: hangs ------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("command", ["plan", "run", "convert"])
def test_a_fifo_given_as_the_suite_is_refused_before_it_is_opened(tmp_path, cli, command):
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    # No writer ever opens the FIFO: before the fix, plan blocked in open() forever.
    result = cli(command, str(fifo), timeout=120)
    one_line_error(result, str(fifo), "not a regular file")


def test_a_grid_over_the_cap_names_its_size_and_how_to_raise_the_cap(suite, cli):
    result = cli("plan", str(suite), env={"HARNESS_MAX_CELLS": "3"})
    one_line_error(result, str(suite), "experiments", "4 cells", "HARNESS_MAX_CELLS=4")
    raised = cli("plan", str(suite), env={"HARNESS_MAX_CELLS": "4"})
    assert raised.returncode == 0, raised.stderr
    assert "4 cells" in raised.stdout
    bad = cli("plan", str(suite), env={"HARNESS_MAX_CELLS": "lots"})
    one_line_error(bad, "HARNESS_MAX_CELLS", "whole number")


def test_the_default_cap_refuses_a_huge_grid_before_planning_it(suite, monkeypatch):
    monkeypatch.delenv("HARNESS_MAX_CELLS", raising=False)
    seeds = (MAX_CELLS // 2) + 1  # x 2 schedules: one cell over the cap
    with pytest.raises(UserError, match=rf"{MAX_CELLS + 2:,} cells.*HARNESS_MAX_CELLS="):
        load_suite(suite, overrides=[f"experiments.0.seeds={list(range(seeds))}"])


# --- 31.6: messages ---------------------------------------------------------------------------


def test_a_suite_without_experiments_says_so_in_every_command(suite, tmp_path, cli):
    empty = ("--set", "experiments=[]")
    results = tmp_path / "results"
    for args in (
        ("plan", str(suite), *empty),
        ("status", str(suite), *empty, "--results", str(results)),
        ("run", str(suite), *empty, "--results", str(results), "--device", "cpu"),
    ):
        line = one_line_error(cli(*args), "defines no experiments")
        assert "None" not in line, line
    assert not results.exists()


def test_only_follows_one_rule_in_plan_run_status_and_check(suite, tmp_path, cli):
    """A pattern that matches nothing (here not even a valid glob) is the same error in all
    four commands, before any of them trains or reads a baseline."""
    results, baseline = tmp_path / "results", tmp_path / "baseline"
    baseline.mkdir()
    only = ("--only", "[(")
    lines = {
        one_line_error(cli(*args), "--only '[('", "matches no cell")
        for args in (
            ("plan", str(suite), *only),
            ("run", str(suite), *only, "--results", str(results), "--device", "cpu"),
            ("status", str(suite), *only, "--results", str(results)),
            ("check", str(suite), *only, "--baseline", str(baseline)),
        )
    }
    assert len(lines) == 1, lines
    assert not results.exists()


@pytest.mark.parametrize("device", ["meta", "cuda:7", "xla", "nonsense"])
def test_an_unusable_device_is_one_line_naming_what_is_available(suite, tmp_path, cli, device):
    results = tmp_path / "results"
    result = cli("run", str(suite), "--results", str(results), "--device", device)
    available = "cuda:0" if torch.cuda.is_available() else "cpu"
    one_line_error(result, f"--device {device}", "available here:", available)
    assert not results.exists()  # refused up front: no row, no failed cell


def test_an_unusable_device_in_devices_is_refused_by_the_parent(suite, tmp_path, cli):
    result = cli("run", str(suite), "--results", str(tmp_path / "r"), "--devices", "cpu,meta")
    one_line_error(result, "--devices meta", "available here:")


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_stop_after_must_be_a_finite_number_of_seconds(suite, tmp_path, cli, value):
    results = tmp_path / "results"
    result = cli("run", str(suite), "--results", str(results), "--stop-after", value)
    one_line_error(result, "--stop-after", "finite number of seconds")
    assert not results.exists()


def _full_disk_error(numel: int) -> RuntimeError:
    """The RuntimeError torch really raises when a checkpoint write comes up short: its zip
    writer on /dev/full, where every write fails with ENOSPC."""
    try:
        torch.save({"w": torch.zeros(numel)}, "/dev/full")
    except RuntimeError as exc:
        return exc
    pytest.skip("torch.save to /dev/full did not fail here")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("numel", [64, 100_000])  # torch words the two differently
def test_a_full_disk_during_a_checkpoint_names_the_cause_path_and_free_space(tmp_path, numel):
    exc = _full_disk_error(numel)
    target = tmp_path / "checkpoints" / "abc.pt"
    line = write_failure(target, exc)
    assert line is not None, str(exc)
    assert str(target) in line and "no space left on device" in line and "free there" in line
    assert write_failure(target, RuntimeError("a bug")) is None
    assert write_failure(target, OSError(28, "No space left on device")) is not None
    assert write_failure(target, OSError(13, "Permission denied")) is None


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_save_checkpoint_on_a_full_disk_raises_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    real_save = torch.save

    def save_to_a_full_disk(obj, _path, *args, **kwargs):
        real_save(obj, "/dev/full", *args, **kwargs)  # the real error, from the real writer

    monkeypatch.setattr(torch, "save", save_to_a_full_disk)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "abc.pt"
    with pytest.raises(CheckpointError, match="no space left on device") as caught:
        save_checkpoint(path, "abc", model, optimizer, Progress())
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor its temporary file


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_at_a_checkpoint_fails_the_cell_with_that_line(suite, tmp_path, monkeypatch):
    """The whole path in one process: training, the epoch's checkpoint on a full disk (the
    real writer on /dev/full), the failed row with one line, no traceback log."""
    import pandas as pd

    from harness.app.runner import run_suite

    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, _path: real_save(obj, "/dev/full"))
    loaded = load_suite(
        suite, overrides=["experiments.0.seeds=[0]", "experiments.0.schedules=[decaying]"]
    )
    results = tmp_path / "results"
    summary = run_suite(loaded, results=results, device="cpu")
    assert len(summary.failed) == 1
    error = pd.read_parquet(results / "runs")["error"].iloc[0]
    assert error.startswith("checkpoint ") and "no space left on device" in error, error
    assert "free there" in error and "unexpected pos" not in error
    assert not (results / "logs").exists()
    left = [p.name for p in (results / "checkpoints").glob("*") if not p.name.endswith(".flock")]
    assert left == []  # neither a checkpoint nor its temporary file (the claim's lock stays)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_traceback_log_that_cannot_be_written_is_not_left_behind(suite, tmp_path):
    from harness.app.cell_rows import failure_line as _failure

    cell = load_suite(suite).cells[0]
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / f"{cell.cell_id}.log"
    log.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    message = _failure(cell, ValueError("boom"), tmp_path)
    assert "ValueError: boom" in message and "traceback in" not in message
    assert not log.exists() and not log.is_symlink()


def test_write_failure_wording_stays_one_line(tmp_path):
    line = write_failure(tmp_path / "x.pt", OSError(28, "No space left on device"))
    assert line is not None and "\n" not in line
    assert textwrap.shorten(line, 400) == line


# --- 23.5: a user error under torchrun ----------------------------------------------------------

DDP_SUITE = """\
name: ddp
dataset: {name: synthetic, train_size: 64, test_size: 32}
models: {tiny: {name: small_cnn, width: 4}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 1, milestones: [], batch_size: 16}
schedules: {constant: {realization: lr}}
training: {ghost_batch_size: 16}
experiments: [{name: ddp, optimizers: [momentum], schedules: [constant], seeds: [0]}]
"""


def test_a_user_error_under_torchrun_is_printed_once_with_what_would_work(tmp_path):
    """B = 16 is one ghost batch of 16: two processes cannot share it. Every rank finds that;
    rank 0 alone prints the line, the others exit 2 quietly, and torchrun's own failure
    summary shows the same line (from its error file) instead of a pointer to its docs."""
    import subprocess
    import sys

    suite = tmp_path / "ddp.yaml"
    suite.write_text(DDP_SUITE)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1")
    repo = str(Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "harness", "run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0  # torchrun's own status (1) for a child that exited 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1, result.stderr
    assert "batch size 16 is not 2 or more whole ghost batches of 16" in ours[0]
    assert "--nproc_per_node=1" in ours[0] and "ghost_batch_size: 8" in ours[0]
    assert "exitcode  : 2" in result.stderr  # rank 0 exited with the user-error status
    assert f"traceback : {ours[0]}" in result.stderr  # torchrun's summary names the cause
    assert "UserError" not in result.stderr and "harness/cli.py" not in result.stderr  # no frame
    assert not (tmp_path / "r").exists()


# --- 31.5: an image whose data is cut short -----------------------------------------------------

IMAGENET_SUITE = """\
name: cut-short
dataset: {{name: imagenet, train_size: {n}, test_size: 6, image_size: 32}}
models:
  resnet: {{name: resnet50, width: 4, max_blocks: 1}}
optimizers:
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], batch_size: 8}}
schedules:
  constant: {{realization: lr}}
training: {{ghost_batch_size: 4}}
execution: {{eval_batch_size: 6, loader_workers: 1}}
experiments:
  - {{name: tiny, optimizers: [momentum], schedules: [constant], seeds: [0]}}
"""


def test_a_truncated_jpeg_is_one_line_and_the_decode_check_leaves_it_out(tmp_path, cli):
    """A JPEG cut short after its header passes the scan's header check. Training it used to
    fail the cell on every rerun with the DataLoader worker's whole traceback as the row's
    error; now the row says one line naming the file and execution.image_check, and with
    image_check: decode the scan leaves the file out of N (counted in the run row)."""
    import pandas as pd
    from PIL import Image

    classes, per_class = ("n01440764", "n01443537", "n01484850"), 8
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c, wnid in enumerate(classes):
            folder = tmp_path / "data" / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                pixels[..., c] = 255
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    bad = tmp_path / "data" / "imagenet" / "train" / classes[1] / f"{classes[1]}_3.JPEG"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # the header intact, the scan data cut short
    with Image.open(bad) as img:
        assert img.size == (48, 40)  # the header check cannot tell

    def run(n: int, *more: str):  # type: ignore[no-untyped-def]
        suite = tmp_path / f"suite-{n}.yaml"
        suite.write_text(IMAGENET_SUITE.format(n=n))
        args = ("--results", str(tmp_path / "results"), "--device", "cpu")
        return cli("run", str(suite), *args, "--data", str(tmp_path / "data"), *more)

    failed = run(24)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    runs = pd.read_parquet(tmp_path / "results" / "runs")
    error = runs["error"].iloc[0]
    assert str(bad) in error and "cannot decode" in error, error
    assert "--set execution.image_check=decode" in error
    assert "\n" not in error and "Traceback" not in error and len(error) < 500, error
    assert not (tmp_path / "results" / "logs").exists()  # a user's problem, not a bug's log

    decode = ("--set", "execution.image_check=decode")
    refused = run(24, *decode)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "23 readable images" in refused.stderr and "dataset.train_size=23" in refused.stderr
    assert str(bad.name) in refused.stderr  # the scan's warning names the file it left out

    trained = run(23, *decode)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    runs = pd.read_parquet(tmp_path / "results" / "runs")
    ok = runs[runs["status"] == "ok"]
    assert len(ok) == 1 and "23 train" in ok["data_source"].iloc[0]
    assert "1 unreadable skipped" in ok["data_source"].iloc[0]
