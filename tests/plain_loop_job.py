"""A plain loop under torchrun, for tests/test_sampler.py: DDP on gloo, a DataLoader with 2
workers (which fetch ahead), stop after K steps and resume from rank 0's checkpoint.

    torchrun --nproc_per_node 2 tests/plain_loop_job.py OUT TAG [K]

Each rank writes OUT/TAG-rank{r}.json: per optimizer step, its global index, the example
indices this rank trained on, and the lr.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

import harness

SEED = 3


def job_plan() -> harness.Plan:
    base = harness.BaseSchedule(epochs=3, milestones=(1, 2), factor=2)
    return harness.realize(
        base, lr=0.1, batch_size=8, momentum=0.9, train_size=96, realization="hybrid",
        batch_drops=1,
    )  # fmt: skip


def main() -> None:
    out, tag = Path(sys.argv[1]), sys.argv[2]
    stop = int(sys.argv[3]) if len(sys.argv) > 3 else None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")
    plan = job_plan()
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.5)
    sampler = harness.PlanBatchSampler(plan, seed=SEED, rank=rank, world_size=world)
    scheduler = harness.PlanLR(optimizer, plan)
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
    net = DistributedDataParallel(model)
    data = TensorDataset(torch.arange(plan.train_size))
    loader = DataLoader(data, batch_sampler=sampler, num_workers=2)
    taken = []
    for epoch in range(sampler.epoch, plan.epochs):
        sampler.set_epoch(epoch)
        for (index,) in loader:
            lr = optimizer.param_groups[0]["lr"]
            net(index.float().unsqueeze(1)).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            taken.append({"step": scheduler.steps_done, "index": index.tolist(), "lr": lr})
            scheduler.step()
            if scheduler.steps_done == stop:
                break
        if scheduler.steps_done == stop:
            break
    if stop is not None and rank == 0:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "sampler": sampler.state_dict(steps_done=scheduler.steps_done),
        }
        torch.save(state, checkpoint)
    dist.barrier()
    (out / f"{tag}-rank{rank}.json").write_text(json.dumps(taken))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
