"""A Lightning run of a small plan, for tests/test_lightning.py: every optimizer step's batch
(the example indices, which the data set's x are), lr and momentum, written per rank as JSON.

    python tests/lightning_job.py OUT TAG [--devices 2] [--workers 2] [--stop K]
        [--epoch-end] [--resume CKPT] [--plan increasing]

--stop K saves a checkpoint at step K (mid-epoch) and stops there; with --epoch-end, K must
end an epoch and the checkpoint is Lightning's end-of-epoch one. --devices 2 runs
strategy="ddp" on gloo (Lightning starts the second process by running this script again).
The plan's epochs have 6, 12, 6 and 6 steps (B = 16, 8, 16, 16; lr 0.1 then 0.05): an epoch
with more batches than the first, and fewer, as Lightning measures epochs by the first.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import harness
from harness.lightning import PlanCallback

TRAIN_SIZE = 96
SEED = 5


def small_plan(kind: str = "warmup") -> harness.Plan:
    """ "warmup" (default): the epochs above. "increasing": the paper's shape, B = 8, 16, 32
    (12, 6 and 3 steps), whose first epoch has the most batches."""
    if kind == "increasing":
        base = harness.BaseSchedule(epochs=3, milestones=(1, 2), factor=2)
        return harness.realize(
            base, lr=0.1, batch_size=8, momentum=0.9, train_size=TRAIN_SIZE, realization="batch"
        )
    base = harness.BaseSchedule(epochs=4, milestones=(2, 3), factor=2, warmup_epochs=1)
    return harness.realize(
        base,
        lr=0.1,
        batch_size=8,
        momentum=0.9,
        train_size=TRAIN_SIZE,
        realization="batch",
        warmup="batch",
        b_max=16,
    )


class Recorder(pl.LightningModule):
    """A linear model on x = index / N; records what each optimizer step trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.steps: list[dict[str, Any]] = []
        self.validations = 0
        self.estimated: float | None = None
        self._batch: list[int] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (index,) = batch
        self._batch = index.tolist()
        x = index.float().unsqueeze(1) / TRAIN_SIZE
        return self.layer(x).pow(2).mean()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called after the callbacks' hook of the same name: the values this step uses.
        group = optimizer.param_groups[0]
        step = {"global_step": self.trainer.global_step, "index": self._batch}
        self.steps.append({**step, "lr": group["lr"], "momentum": group["momentum"]})

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        return None

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.validations += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Where a scheduler would be sized: Lightning's count, which the test compares.
        self.estimated = self.trainer.estimated_stepping_batches
        # Deliberately not the plan's values: the callback sets lr and momentum.
        return torch.optim.SGD(self.parameters(), lr=7.0, momentum=0.5)


def run(
    out: Path,
    tag: str,
    *,
    devices: int = 1,
    workers: int = 0,
    stop: int | None = None,
    epoch_end: bool = False,
    resume: str | None = None,
    plan_kind: str = "warmup",
    max_steps: int = -1,
) -> dict[str, Any]:
    plan = small_plan(plan_kind)
    callback = PlanCallback(plan, seed=SEED)
    data = TensorDataset(torch.arange(TRAIN_SIZE))
    loader = DataLoader(
        data, batch_sampler=callback.sampler, num_workers=workers, persistent_workers=workers > 0
    )
    val = DataLoader(TensorDataset(torch.arange(8)), batch_size=8)
    callbacks: list[pl.Callback] = [callback]
    if stop is not None:
        every = {"every_n_epochs": 1} if epoch_end else {"every_n_train_steps": stop}
        callbacks.append(ModelCheckpoint(dirpath=out / f"{tag}-ckpt", save_top_k=-1, **every))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        use_distributed_sampler=False,
        max_epochs=plan.epochs,
        max_steps=stop if stop is not None else max_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=stop is not None,
        num_sanity_val_steps=0,
    )
    model = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, train_dataloaders=loader, val_dataloaders=val, ckpt_path=resume,
                    weights_only=True)  # fmt: skip
    result = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "steps": model.steps,
        "validations": model.validations,
        "global_step": trainer.global_step,
        "estimated_stepping_batches": model.estimated,
        "checkpoints": sorted(str(p) for p in (out / f"{tag}-ckpt").glob("*.ckpt")),
        "warnings": [str(w.message) for w in caught],
    }
    (out / f"{tag}-rank{trainer.global_rank}.json").write_text(json.dumps(result))
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("tag")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--stop", type=int, default=None)
    p.add_argument("--epoch-end", action="store_true")
    p.add_argument("--resume", default=None)
    p.add_argument("--plan", default="warmup", choices=("warmup", "increasing"))
    a = p.parse_args()
    run(a.out, a.tag, devices=a.devices, workers=a.workers, stop=a.stop, epoch_end=a.epoch_end,
        resume=a.resume, plan_kind=a.plan)  # fmt: skip


if __name__ == "__main__":
    main()
