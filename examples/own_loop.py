"""The paper in your own training loop: an increasing-batch schedule in plain PyTorch.

No harness runner here: a small CNN, a `DataLoader`, `torch.optim.SGD`, and three pieces of
the harness API that replace a learning-rate scheduler:

- `harness.realize` turns the lr recipe into a plan (batch size, lr, momentum per epoch);
- `harness.PlanBatchSampler` gives the DataLoader batches of the planned sizes;
- `harness.PlanLR` sets the plan's lr and momentum at every optimizer step.

Run it (CIFAR-10 python batches under --data or $HARNESS_DATA):

    python examples/own_loop.py --epochs 30 --milestones 10 20 --train-size 10000

With --checkpoint FILE the run can be stopped (--max-steps) and started again; it goes on
from the same next optimizer step, with any --workers (DataLoader worker processes, which fetch
batches ahead: the saved position is the steps taken, not the batches fetched). Under torchrun
each process trains its share of every global batch (DDP on gloo; rank 0 saves):

    torchrun --nproc_per_node 2 examples/own_loop.py --workers 2 --train-size 10000

It prints one JSON line at the end: optimizer steps taken, the plan's total, and the test
accuracy (a fraction).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import harness
from harness.data.cifar10 import load_cifar10
from harness.data.request import resolve_data_root


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
    p.add_argument("--max-micro-batch", type=int, default=512, help="images per backward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--checkpoint", type=Path, help="save here when stopping; resume from it")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    return p.parse_args()


def small_cnn(num_classes: int = 10) -> nn.Module:
    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 32), block(32, 64), block(64, 128), nn.Flatten(), nn.Linear(128 * 16, num_classes)
    )


def tensors(x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
    """uint8 NCHW images -> normalized float32, labels -> int64."""
    return (x.float().div(255) - mean) / std, y.long()


def main() -> None:
    args = parse_args()
    # Under torchrun: one process per rank, each with its share of every global batch.
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(args.seed)
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

    # The lr recipe, and how its drops are made: by the lr, the batch, or both.
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

    model = small_cnn()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=5e-4
    )
    sampler = harness.PlanBatchSampler(plan, seed=args.seed, rank=rank, world_size=world_size)
    scheduler = harness.PlanLR(optimizer, plan)
    loader = DataLoader(train, batch_sampler=sampler, num_workers=args.workers)

    if args.checkpoint is not None and args.checkpoint.exists():
        # Plain tensors and numbers only: nothing in a checkpoint may execute code.
        state = torch.load(args.checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
    # Each rank's gradient is the mean over its share; DDP averages the shares: the whole
    # batch's mean. (The batch-norm statistics stay per rank here.)
    net = DistributedDataParallel(model) if world_size > 1 else model

    steps = 0  # optimizer steps taken by this process
    stopped = False
    for epoch in range(sampler.epoch, plan.epochs):
        sampler.set_epoch(epoch)  # keeps a resumed run's place in its epoch
        model.train()
        for x, y in loader:
            # A batch too big for memory runs as micro-batches whose gradients add up to the
            # whole batch's: each mean loss is weighted by its share of the batch.
            n_micro = harness.micro_batches(len(y), args.max_micro_batch)
            optimizer.zero_grad(set_to_none=True)
            for xm, ym in zip(x.tensor_split(n_micro), y.tensor_split(n_micro)):
                (F.cross_entropy(net(xm), ym) * (len(ym) / len(y))).backward()
            optimizer.step()
            scheduler.step()  # after optimizer.step(): the lr of the next step
            steps += 1
            if args.max_steps is not None and steps >= args.max_steps:
                stopped = True
                break
        if stopped:
            break
        hp = harness.at_epoch(plan, epoch)
        print(f"epoch {epoch}: B {hp.batch_size}, lr {hp.lr:.4g}, steps {scheduler.last_epoch}")

    if stopped and args.checkpoint is not None and rank == 0:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                # The position of the next optimizer step, not of the next batch fetched: the
                # DataLoader's workers have fetched ahead (any rank's state resumes every rank).
                "sampler": sampler.state_dict(steps_done=scheduler.steps_done),
            },
            args.checkpoint,
        )
    if world_size > 1:
        dist.barrier()  # the checkpoint is written before any rank may start again

    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(xb).argmax(1) == yb).sum())
            for xb, yb in zip(test_x.split(1000), test_y.split(1000))
        )
    if world_size > 1:
        dist.destroy_process_group()
    print(
        json.dumps(
            {
                "rank": rank,
                "world_size": world_size,
                "steps": steps,
                "total_steps": scheduler.last_epoch,
                "plan_updates": plan.updates,
                "finished": scheduler.last_epoch >= plan.updates,
                "test_acc": correct / len(test_y),
            }
        )
    )


if __name__ == "__main__":
    with harness.exit_on_user_error():  # a bad value: one line and exit 2, as the CLI does
        main()
