"""Checkpoints never run code; a bad one is one line naming the file, in-process and as a row."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.app.jobs import train_job
from harness.app.runner import run_suite
from harness.config.suite import load_suite
from harness.core.epoch_record import EpochRecord
from harness.core.execution import Execution
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.results import paths
from harness.train.checkpoint import CheckpointError, Progress, load_checkpoint, save_checkpoint
from harness.train.loop import build
from harness.train.optim import build_optimizer

SUITE = """\
name: ckpt
dataset: {name: synthetic, train_size: 64, test_size: 32}
models:
  small: {name: small_cnn, width: 2}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 16}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - {name: grid, optimizers: [momentum], schedules: [decaying, increasing]}
"""


class _Payload:
    """Unpickling this would call os.system: what a crafted checkpoint tries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def suite(tmp_path: Path):
    path = tmp_path / "ckpt.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return load_suite(path)


def _model_and_optimizer(suite):
    job = train_job(suite.cells[0])
    model = build(job, torch.device("cpu"), Execution())
    return job, model, build_optimizer(model.parameters(), job.optimizer, torch.device("cpu"))


def _crafted(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Both formats torch.load reads: a plain pickle and torch's own zip container.
    with open(path, "wb") as f:
        pickle.dump({"version": 2, "model": _Payload(marker)}, f)


@pytest.mark.parametrize("container", ["pickle", "torch-zip"])
def test_a_crafted_checkpoint_is_refused_and_never_runs(suite, tmp_path, container):
    job, model, optimizer = _model_and_optimizer(suite)
    marker = tmp_path / "pwned"
    path = tmp_path / "c.pt"
    if container == "pickle":
        _crafted(path, marker)
    else:
        torch.save({"version": 2, "model": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=rf"{path}: unreadable checkpoint .*move it away"):
        load_checkpoint(path, job.cell_id, model, optimizer, torch.device("cpu"))
    assert not marker.exists()


def test_truncated_empty_and_foreign_checkpoints_name_the_file(suite, tmp_path):
    job, model, optimizer = _model_and_optimizer(suite)
    good = tmp_path / "good.pt"
    save_checkpoint(good, job.cell_id, model, optimizer, Progress(epoch=1))
    cpu = torch.device("cpu")
    assert load_checkpoint(good, job.cell_id, model, optimizer, cpu).epoch == 1

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for bad in (truncated, empty):
        with pytest.raises(CheckpointError, match=rf"^{bad}: unreadable checkpoint"):
            load_checkpoint(bad, job.cell_id, model, optimizer, cpu)
    with pytest.raises(CheckpointError, match=rf"{good}: belongs to cell {job.cell_id}"):
        load_checkpoint(good, "another-cell", model, optimizer, cpu)
    plain = tmp_path / "plain.pt"
    torch.save([1, 2, 3], plain)
    with pytest.raises(CheckpointError, match="not a harness checkpoint"):
        load_checkpoint(plain, job.cell_id, model, optimizer, cpu)
    assert load_checkpoint(tmp_path / "absent.pt", job.cell_id, model, optimizer, cpu) is None


def test_a_bad_checkpoint_fails_its_cell_and_the_suite_goes_on(suite, tmp_path):
    """A planted crafted checkpoint: its cell's row is failed and names the file, the other
    cell trains, nothing executes; after moving the file away the cell trains."""
    victim, other = suite.cells
    marker = tmp_path / "pwned"
    planted = paths.checkpoint_path(tmp_path / "results", victim.cell_id)
    _crafted(planted, marker)
    summary = run_suite(suite, results=tmp_path / "results", device="cpu")
    assert summary.failed == [victim.cell_id] and summary.ran == [other.cell_id]
    assert not marker.exists()
    runs = pd.read_parquet(tmp_path / "results" / "runs").set_index("cell_id")
    assert runs.loc[victim.cell_id, "status"] == "failed"
    assert str(planted) in runs.loc[victim.cell_id, "error"]
    assert "\n" not in runs.loc[victim.cell_id, "error"]
    assert runs.loc[other.cell_id, "status"] == "ok"

    planted.unlink()
    again = run_suite(suite, results=tmp_path / "results", device="cpu")
    assert again.ran == [victim.cell_id] and again.skipped == [other.cell_id]


def test_a_checkpoint_resumes_on_the_device_it_is_loaded_to(suite, tmp_path):
    """Saved tensors are mapped to the loading device (CPU here; CUDA<->CPU on a GPU host)."""
    job, model, optimizer = _model_and_optimizer(suite)
    data = DeviceData.from_arrays(synthetic_cifar10(64, 32, seed=0), torch.device("cpu"))
    x, y = data.train_batch(torch.arange(16), torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    path = tmp_path / "c.pt"
    save_checkpoint(path, job.cell_id, model, optimizer, Progress(epoch=1, updates=4))
    _, fresh, fresh_opt = _model_and_optimizer(suite)
    progress = load_checkpoint(path, job.cell_id, fresh, fresh_opt, torch.device("cpu"))
    assert progress is not None and progress.updates == 4
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _row(epoch: int, updates: int) -> EpochRecord:
    nan = float("nan")
    return EpochRecord("c", epoch, updates, nan, 0, nan, nan, nan, nan, nan, nan, nan, nan)


def _rows(plan, epochs: int) -> list[EpochRecord]:
    return [_row(e, plan.updates_before(e)) for e in range(1, epochs + 1)]


def test_check_progress_accepts_what_the_plan_passes_through_and_names_the_rest(suite):
    """The plan: 2 epochs of 64 / 16 = 4 steps (lr realization). Each bad progress is named."""
    from harness.train.checkpoint import check_progress

    plan = suite.cells[0].plan

    def progress(**kw) -> Progress:
        base = {"epoch": 1, "updates": 4, "curves": _rows(plan, 1)}
        return Progress(**{**base, **kw})

    assert check_progress(Progress(), plan) is None
    assert check_progress(progress(), plan) is None
    audit = {"sums": torch.zeros(3, dtype=torch.int64), "position": 48, "batch": 16, "micro": 8}
    assert check_progress(progress(partial={"epoch": 1, "step": 3, "audit": audit}), plan) is None
    done = progress(epoch=2, updates=8, curves=_rows(plan, 2))
    assert check_progress(done, plan) is None  # trained, row not written yet: resumable
    bad = {
        "epoch 99 is outside": progress(epoch=99, updates=123456),
        "epoch -1 is outside": progress(epoch=-1),
        "epoch '1' is outside": progress(epoch="1"),
        "5 updates after 1 epochs, the plan takes 4": progress(updates=5),
        "curve rows": progress(curves=[]),
        "do not match": progress(curves=[_row(1, 3)]),
        "status 'paused'": progress(status="paused"),
        "step 4 of epoch 2, which has 4 steps": progress(partial={"epoch": 1, "step": 4}),
        "step 0 of epoch 2": progress(partial={"epoch": 1, "step": 0}),
        "an unfinished epoch 0 after 1": progress(partial={"epoch": 0, "step": 1}),
        "an unfinished epoch 2 after 2": progress(
            epoch=2, updates=8, curves=_rows(plan, 2), partial={"epoch": 2, "step": 1}
        ),
        "its audit counters are missing, at step 3": progress(partial={"epoch": 1, "step": 3}),
        "audit position -1000000000 after 3 steps of 16 (48)": progress(
            partial={"epoch": 1, "step": 3, "audit": {**audit, "position": -(10**9)}}
        ),
        "audit batch 32": progress(
            partial={"epoch": 1, "step": 3, "audit": {**audit, "batch": 32}}
        ),
        "audit micro-batch 0": progress(
            partial={"epoch": 1, "step": 3, "audit": {**audit, "micro": 0}}
        ),
        "three residues": progress(
            partial={"epoch": 1, "step": 3, "audit": {**audit, "sums": torch.full((3,), -1)}}
        ),
    }
    for why, given in bad.items():
        assert why in (check_progress(given, plan) or ""), (why, check_progress(given, plan))


def test_a_checkpoint_that_does_not_fit_the_plan_is_refused_before_the_model_loads(suite, tmp_path):
    from harness.train.checkpoint import ProgressMismatch

    job, model, optimizer = _model_and_optimizer(suite)
    path = tmp_path / "c.pt"
    save_checkpoint(path, job.cell_id, model, optimizer, Progress(epoch=1, updates=31))
    fresh, fresh_opt = _model_and_optimizer(suite)[1:]
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    with pytest.raises(ProgressMismatch, match="31 updates after 1 epochs, the plan takes 4"):
        load_checkpoint(path, job.cell_id, fresh, fresh_opt, torch.device("cpu"), job.plan)
    assert all(not p.any() for p in fresh.parameters())  # untouched


def test_a_version_2_checkpoint_still_resumes(suite, tmp_path):
    job, model, optimizer = _model_and_optimizer(suite)
    path = tmp_path / "c.pt"
    save_checkpoint(path, job.cell_id, model, optimizer, Progress(epoch=1, updates=4))
    state = torch.load(path, weights_only=True)
    state["version"] = 2
    del state["progress"]["partial"]
    torch.save(state, path)
    got = load_checkpoint(path, job.cell_id, model, optimizer, torch.device("cpu"))
    assert got is not None and got.epoch == 1 and got.partial is None
