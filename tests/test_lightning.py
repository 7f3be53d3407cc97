"""harness.lightning.PlanCallback in real PyTorch Lightning: every optimizer step of the plan,
once, with its batch, lr and momentum; in one process, with DataLoader workers, under DDP
(2 processes, gloo, CPU) and resumed from mid-epoch and end-of-epoch checkpoints.

The runs are tests/lightning_job.py (a linear model on x = example index, so each step's batch
is read back exactly); one-process runs go in this process, DDP ones in a subprocess, where
Lightning starts the second rank by running the script again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="PyTorch Lightning is not installed (extra [lightning])")

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import harness
from harness.lightning import PlanCallback
from tests.conftest import REPO
from tests.lightning_job import SEED, TRAIN_SIZE, Recorder, run, small_plan

JOB = REPO / "tests" / "lightning_job.py"


def planned(plan: harness.Plan, rank: int = 0, world: int = 1) -> list[dict[str, Any]]:
    """What every step of an uninterrupted run gives rank `rank`: its indices, lr, momentum."""
    sampler = harness.PlanBatchSampler(plan, seed=SEED, rank=rank, world_size=world)
    batches = [b for epoch in range(plan.epochs) for b in _epoch(sampler, epoch)]
    assert len(batches) == plan.updates
    return [
        {
            "index": b,
            "lr": harness.at_step(plan, s).lr,
            "momentum": harness.at_step(plan, s).momentum,
        }
        for s, b in enumerate(batches)
    ]


def _epoch(sampler: harness.PlanBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _taken(*runs: dict[str, Any]) -> list[dict[str, Any]]:
    steps = [s for r in runs for s in r["steps"]]
    assert [s["global_step"] for s in steps] == list(range(len(steps)))  # none lost or repeated
    return [{k: s[k] for k in ("index", "lr", "momentum")} for s in steps]


def _sizes(steps: list[dict[str, Any]]) -> list[int]:
    return [len(s["index"]) for s in steps]


def test_one_process_takes_every_planned_step_validates_each_epoch_and_warns_of_the_estimate(
    tmp_path: Path,
):
    plan = small_plan()
    assert [ph.updates for ph in plan.phases] == [6, 12, 6, 6]
    result = run(tmp_path, "full")
    assert _taken(result) == planned(plan)
    assert _sizes(result["steps"]) == [16] * 6 + [8] * 12 + [16] * 12
    assert result["global_step"] == plan.updates == 30
    # Lightning measures every epoch by the first (6 batches): without the callback epoch 1
    # stops at 6 of its 12 steps, and the 6-step epochs miss their validation.
    assert result["validations"] == plan.epochs
    assert result["estimated_stepping_batches"] == 6 * 4
    assert any("estimated_stepping_batches is 24" in w and "30" in w for w in result["warnings"])


def test_the_estimate_is_the_first_epochs_length_times_epochs_unless_max_steps_caps_it(
    tmp_path: Path,
):
    plan = small_plan("increasing")
    assert plan.updates == 12 + 6 + 3
    result = run(tmp_path, "inc", plan_kind="increasing")
    assert _taken(result) == planned(plan)
    assert _sizes(result["steps"]) == [8] * 12 + [16] * 6 + [32] * 3
    assert result["estimated_stepping_batches"] == 12 * 3
    assert any("estimated_stepping_batches is 36" in w for w in result["warnings"])
    # The first epoch is the longest here, so max_steps=plan.updates makes it exact.
    capped = run(tmp_path, "cap", plan_kind="increasing", max_steps=plan.updates)
    assert _taken(capped) == planned(plan)
    assert capped["estimated_stepping_batches"] == plan.updates
    assert not any("estimated_stepping_batches" in w for w in capped["warnings"])


def test_lightnings_lost_epoch_on_an_end_of_epoch_resume_with_max_steps_is_an_error(
    tmp_path: Path,
):
    plan = small_plan()
    first = run(tmp_path, "first", stop=18, epoch_end=True)
    with pytest.raises(RuntimeError, match=r"ended epoch 1 again.*resume with max_steps=-1"):
        run(tmp_path, "rest", resume=first["checkpoints"][-1], max_steps=plan.updates)


@pytest.mark.parametrize(
    ("kind", "stop", "epoch_end", "workers"),
    [("warmup", 9, False, 2), ("warmup", 18, True, 0), ("increasing", 5, False, 2)],
    # The last: its last epoch (3 batches) is shorter than the 2 workers' queue (4).
    ids=["mid-epoch-2-workers", "end-of-epoch", "short-epochs-2-workers"],
)
def test_resume_from_a_checkpoint_loses_and_repeats_no_step(
    tmp_path: Path, kind: str, stop: int, epoch_end: bool, workers: int
):
    plan = small_plan(kind)
    assert epoch_end == (stop == plan.updates_before(2))
    kw = {"workers": workers, "plan_kind": kind}
    first = run(tmp_path, "first", stop=stop, epoch_end=epoch_end, **kw)
    assert len(first["steps"]) == stop
    checkpoint = first["checkpoints"][-1]  # the end-of-epoch one saves every epoch
    assert checkpoint.endswith(f"step={stop}.ckpt")
    rest = run(tmp_path, "rest", resume=checkpoint, **kw)
    assert _taken(first, rest) == planned(plan)
    assert rest["global_step"] == plan.updates


def _job(out: Path, tag: str, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(JOB), str(out), tag, "--devices", "2", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"{tag}-rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_two_processes_split_every_step_and_resume_mid_epoch(tmp_path: Path):
    plan = small_plan()
    first = _job(tmp_path, "ddp", "--stop", "9")
    (checkpoint,) = first[0]["checkpoints"]
    rest = _job(tmp_path, "ddp-rest", "--resume", checkpoint, "--workers", "2")
    whole = planned(plan)
    for rank in (0, 1):
        assert first[rank]["world_size"] == 2
        assert _taken(first[rank], rest[rank]) == planned(plan, rank, 2)
        assert rest[rank]["global_step"] == plan.updates
    # Together the ranks train each global batch of the plan, B/2 examples each.
    together = zip(_taken(first[0], rest[0]), _taken(first[1], rest[1]))
    assert [a["index"] + b["index"] for a, b in together] == [s["index"] for s in whole]


def _trainer(**kw: Any) -> pl.Trainer:
    kw = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False,
          "enable_model_summary": False, "enable_checkpointing": False, **kw}  # fmt: skip
    return pl.Trainer(**kw)


@pytest.mark.parametrize(
    ("trainer_kw", "message"),
    [
        ({"max_epochs": 9}, r"Trainer\(max_epochs=9\), but the plan has 4 epochs"),
        ({"max_epochs": 4, "accumulate_grad_batches": 2}, r"accumulate_grad_batches=2"),
        ({"max_epochs": 4, "limit_train_batches": 0.5}, r"limit_train_batches=0.5"),
        ({"max_epochs": 4, "limit_train_batches": 1}, r"limit_train_batches=1\) would drop"),
        ({"max_epochs": 4, "reload_dataloaders_every_n_epochs": 1}, r"opens the train loader"),
        (
            {"max_epochs": 4, "strategy": "ddp", "devices": 2},
            r"pass Trainer\(use_distributed_sampler=False\)",
        ),
    ],
)
def test_a_trainer_that_would_break_the_plan_is_refused_in_one_line(trainer_kw, message):
    callback = PlanCallback(small_plan(), seed=SEED)
    with pytest.raises(ValueError, match=rf"^PlanCallback: .*{message}"):
        callback.setup(_trainer(**trainer_kw), Recorder(), "fit")


class _WithScheduler(Recorder):
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]


def test_an_lr_scheduler_or_another_sampler_is_refused_before_the_first_step():
    plan = small_plan()
    callback = PlanCallback(plan, seed=SEED)
    loader = DataLoader(TensorDataset(torch.arange(TRAIN_SIZE)), batch_sampler=callback.sampler)
    with pytest.raises(ValueError, match="returned an lr scheduler; remove it"):
        _trainer(max_epochs=4, callbacks=[callback]).fit(_WithScheduler(), loader)
    callback = PlanCallback(plan, seed=SEED)
    other = DataLoader(TensorDataset(torch.arange(TRAIN_SIZE)), batch_size=8)
    with pytest.raises(ValueError, match=r"batch_sampler=callback\.sampler"):
        _trainer(max_epochs=4, callbacks=[callback]).fit(Recorder(), other)


def test_a_checkpoint_of_another_plan_or_seed_is_refused():
    state = PlanCallback(small_plan(), seed=SEED).state_dict()
    with pytest.raises(ValueError, match="seed"):
        PlanCallback(small_plan(), seed=SEED + 1).load_state_dict(state)
    with pytest.raises(ValueError, match="updates"):
        PlanCallback(small_plan("increasing"), seed=SEED).load_state_dict(state)


def test_import_harness_does_not_import_lightning_and_harness_lightning_does():
    code = (
        "import sys, harness\n"
        "assert 'lightning' not in sys.modules\n"
        "assert harness.lightning.PlanCallback.__module__ == 'harness.lightning'\n"
        "assert 'lightning' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_the_lightning_example_takes_the_plans_steps_and_resumes(cifar_root: Path, tmp_path):
    flags = ["--epochs", "3", "--milestones", "1", "2", "--factor", "2", "--train-size", "256"]
    flags += ["--test-size", "100", "--batch-size", "64", "--lr", "0.05"]
    flags += ["--checkpoint-dir", str(tmp_path / "ck"), "--every", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HARNESS_DATA": str(cifar_root)}

    def example(*more: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / "lightning_loop.py"), *flags, *more],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.splitlines()[-1])

    first = example("--max-steps", "3")  # mid-epoch 0 (4 steps of 64)
    assert (first["steps"], first["finished"]) == (3, False)
    rest = example("--workers", "2")
    assert rest["finished"] and rest["total_steps"] == rest["plan_updates"] == 4 + 2 + 1
    assert first["steps"] + rest["steps"] == rest["plan_updates"]
