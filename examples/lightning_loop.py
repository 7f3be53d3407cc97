"""The paper in PyTorch Lightning: an increasing-batch schedule from one callback.

The same small CNN and CIFAR-10 subset as examples/own_loop.py, trained by a Lightning
`Trainer`. `harness.lightning.PlanCallback` owns the plan's batch sampler (the train
DataLoader draws from `callback.sampler`), sets the plan's lr and momentum before every
optimizer step, gives the sampler its epoch and rank, and keeps its place in Lightning's
checkpoints. There is no lr scheduler: the callback is the schedule.

    pip install -e '.[lightning]'    # in the harness clone
    python examples/lightning_loop.py --epochs 30 --milestones 10 20 --train-size 10000

--devices 2 runs DDP on the CPU (gloo; Lightning starts the second process itself), each
rank with its share of every global batch. With --checkpoint-dir DIR a checkpoint is saved
every --every steps (and last.ckpt); started again with the same DIR the run resumes from
last.ckpt at the next planned step, mid-epoch or not, with any --workers. It prints one JSON
line at the end: optimizer steps taken by this run, in all, the plan's total, test accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from own_loop import small_cnn, tensors  # the model and normalization of the plain example
from torch.utils.data import DataLoader, TensorDataset

import harness
from harness.data.cifar10 import load_cifar10
from harness.data.request import resolve_data_root
from harness.lightning import PlanCallback


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder holding cifar-10-batches-py (default $HARNESS_DATA)")
    p.add_argument("--train-size", type=int, default=50_000, help="first N training images")
    p.add_argument("--test-size", type=int, default=10_000, help="first N test images")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--milestones", type=int, nargs="*", default=[10, 20], help="epochs")
    p.add_argument("--factor", type=float, default=5.0, help="noise-scale drop per milestone")
    p.add_argument("--batch-size", type=int, default=128, help="initial batch (images)")
    p.add_argument("--lr", type=float, default=0.1, help="per step, on the mean batch loss")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--realization", choices=("lr", "batch", "hybrid"), default="batch")
    p.add_argument("--b-max", type=int, default=None, help="largest batch (images)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--devices", type=int, default=1, help="processes (DDP on gloo when > 1)")
    p.add_argument("--checkpoint-dir", type=Path, help="save checkpoints here; resume from it")
    p.add_argument("--every", type=int, default=50, help="optimizer steps between checkpoints")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
    return p.parse_args()


class Classifier(pl.LightningModule):
    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.net = small_cnn()
        self.momentum = momentum
        self.start_step = 0

    def on_train_start(self) -> None:
        self.start_step = self.trainer.global_step  # where a resumed run starts

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # lr and momentum here are placeholders: PlanCallback sets the plan's at every step.
        # Size anything step-based by callback.updates, not trainer.estimated_stepping_batches
        # (Lightning's len(first epoch) x max_epochs; the plan's epochs differ in length).
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=self.momentum, weight_decay=5e-4)


def main() -> None:
    args = parse_args()
    pl.seed_everything(args.seed, verbose=False)
    data = load_cifar10(
        resolve_data_root(args.data), train_size=args.train_size, test_size=args.test_size
    )
    train_x = torch.from_numpy(data.train_x)
    mean = train_x.float().div(255).mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.float().div(255).std(dim=(0, 2, 3), keepdim=True)
    train = TensorDataset(*tensors(train_x, torch.from_numpy(data.train_y), mean, std))
    test_x, test_y = tensors(
        torch.from_numpy(data.test_x), torch.from_numpy(data.test_y), mean, std
    )

    base = harness.BaseSchedule(
        epochs=args.epochs, milestones=tuple(args.milestones), factor=args.factor
    )
    plan = harness.realize(
        base,
        lr=args.lr,
        batch_size=args.batch_size,
        momentum=args.momentum,
        train_size=len(train),
        realization=args.realization,
        batch_drops=1 if args.realization == "hybrid" else 0,
        b_max=args.b_max,
    )

    callback = PlanCallback(plan, seed=args.seed)
    loader = DataLoader(
        train,
        batch_sampler=callback.sampler,  # the plan's batches; the callback sets epoch and rank
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    callbacks: list[pl.Callback] = [callback]
    resume = None
    if args.checkpoint_dir is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=args.checkpoint_dir,
                every_n_train_steps=args.every,
                save_top_k=-1,
                save_last=True,
            )
        )
        if (args.checkpoint_dir / "last.ckpt").exists():
            resume = str(args.checkpoint_dir / "last.ckpt")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        use_distributed_sampler=False,  # each rank's share comes from the plan's sampler
        max_epochs=plan.epochs,  # the plan's epochs; they differ in length
        max_steps=args.max_steps,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=args.checkpoint_dir is not None,
    )
    model = Classifier(args.momentum)
    # weights_only: tensors and plain values only; nothing loaded from disk may run code.
    trainer.fit(model, train_dataloaders=loader, ckpt_path=resume, weights_only=True)

    if trainer.global_rank != 0:
        return
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model.net(xb).argmax(1) == yb).sum())
            for xb, yb in zip(test_x.split(1000), test_y.split(1000))
        )
    print(
        json.dumps(
            {
                "steps": callback.steps_done - model.start_step,
                "total_steps": callback.steps_done,
                "plan_updates": callback.updates,
                "finished": callback.steps_done >= callback.updates,
                "test_acc": correct / len(test_y),
            }
        )
    )


if __name__ == "__main__":
    with harness.exit_on_user_error():  # a bad value: one line and exit 2, as the CLI does
        main()
