"""Data parallelism: one cell trained by N processes, on PyTorch's own distributed engine.

Launched by ``torchrun`` (one or many nodes), every process builds the same model from the
same seed and draws the same epoch order and augmentation (`train_images` of the whole step
batch: the draw is cheap and identical in every process); each process then keeps its share
of the step, ``B / N`` examples, made of whole ghost slices, and runs it as its micro-batches.
So the update sequence is the one-process run with accumulation:

* gradients: the model is wrapped in ``DistributedDataParallel`` (bucketed all-reduce that
  overlaps the backward pass); micro-batches before the last run under ``no_sync()``, so the
  gradients are averaged once per optimizer step. Each process's loss is its summed
  cross-entropy times N / B; DDP's average over N processes is then the mean over all B,
  whatever the shares' sizes.
* batch-norm running statistics: every process collects its slices' moments during the step
  (`harness.models.ghost_bn.accumulate_running_stats`); the sums are all-reduced once per step
  before the running averages move, so they are the mean over all of the step's slices.
* the epoch's training loss, the evaluation (each process evaluates every N-th batch), and the
  peak memory are reduced once per epoch; decisions that read a clock (pause at a deadline)
  are rank 0's, broadcast.

The rule for the batch: every phase's B must be whole ghost slices, at least one per process
(``B % ghost == 0`` and ``B / ghost >= N``); splitting a slice would change its batch-norm
statistics, so anything else is an error before training (`check_divisible`), never a silent
change of the recipe. Uneven shares (B = 640 with ghost 128 over 2 processes: 3 and 2 slices)
are exact: the loss scaling above weighs every example 1 / B.

Rank 0 alone writes rows and checkpoints; a checkpoint holds no trace of N, so a cell resumes
with any number of processes. Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from harness.data.source import Shard
from harness.errors import UserError

__all__ = [
    "LaunchEnv",
    "Replica",
    "check_divisible",
    "from_environment",
    "launch_env",
    "launched_by_torchrun",
    "shutdown",
]


@dataclass(frozen=True)
class LaunchEnv:
    """This process's place as torchrun's variables give it (0 of 1 where they are unset)."""

    rank: int  # RANK
    world: int  # WORLD_SIZE
    local: int  # LOCAL_RANK


def launch_env() -> LaunchEnv:
    """RANK, WORLD_SIZE and LOCAL_RANK, the one reading of them: each one set must be a whole
    number (WORLD_SIZE at least 1, RANK below it), else a `UserError` naming it."""

    def read(name: str, default: int, low: int) -> int:
        text = os.environ.get(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise UserError(
                f"{name}={text!r}: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK to whole "
                f"numbers ({name} at least {low}); unset them, or start the run with torchrun"
            )
        return value

    env = LaunchEnv(read("RANK", 0, 0), read("WORLD_SIZE", 1, 1), read("LOCAL_RANK", 0, 0))
    if "WORLD_SIZE" in os.environ and env.rank >= env.world:
        raise UserError(
            f"RANK={env.rank} with WORLD_SIZE={env.world}: a rank is 0..WORLD_SIZE-1; unset "
            "them, or start the run with torchrun"
        )
    port = os.environ.get("MASTER_PORT")
    if env.world > 1 and port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise UserError(
            f"MASTER_PORT={port!r}: the rendezvous port is a whole number 1-65535; unset it, "
            "or start the run with torchrun"
        )
    return env


def launched_by_torchrun() -> bool:
    """True in a process that torchrun (or any launcher setting its variables) started."""
    return launch_env().world > 1 and "RANK" in os.environ


@dataclass
class Replica:
    """This process's place in a data-parallel job: rank of world, and its collectives."""

    rank: int
    world: int
    device: torch.device
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper, once `wrap` ran

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def devices(self) -> str:
        """Every process's device, e.g. "cuda:0,cuda:1" (for the run row)."""
        names = [None] * self.world
        dist.all_gather_object(names, str(self.device))
        return ",".join(str(n) for n in names)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel; buffers are not broadcast (BN statistics are
        reduced once per step instead, see the module docstring)."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, broadcast_buffers=False
        )
        return self.ddp

    def shard(self, unit: int = 1) -> Shard:
        """This process's share of every step, in whole units (the ghost batch size)."""
        return Shard(self.rank, self.world, unit)

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager[None]:
        """DDP's no_sync for every micro-batch but a step's last: one all-reduce per step."""
        if last or self.ddp is None:
            return contextlib.nullcontext()
        return self.ddp.no_sync()  # type: ignore[operator]

    def all_reduce(self, tensors: Sequence[Tensor], op: str = "sum") -> None:
        """Reduce ``tensors`` in place across processes: one collective per dtype."""
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, op=reduce_op)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` in every process (decisions that read a clock or a lock)."""
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` in every process (a measurement a decision is made from)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def all_gather(self, value: object) -> list[object]:
        """Every process's ``value`` (plain Python data), in rank order."""
        gathered: list[object] = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()


def check_divisible(batches: Sequence[int], world: int, ghost: int) -> str | None:
    """Why these phase batch sizes cannot be split over ``world`` processes, or None.

    The message says what would work: the most processes every phase can feed, and the
    largest ghost batch size that would give every process a slice (a new recipe, so new
    cell ids), when one exists.
    """
    bad = [b for b in batches if b % ghost or b // ghost < world]
    if not bad:
        return None
    b = bad[0]
    most = min(bi // ghost for bi in batches)
    fewer = (
        f"run at most {most} process{'es' if most > 1 else ''} (torchrun --nproc_per_node={most})"
        if most >= 1
        else "run it without torchrun"
    )
    step = math.gcd(*batches)
    smaller = [g for g in range(min(ghost - 1, step), 0, -1) if step % g == 0]
    fits = [g for g in smaller if min(batches) // g >= world]
    other = (
        f", or set training.ghost_batch_size: {fits[0]} (a different recipe: new cell ids)"
        if fits
        else f"; no ghost batch size gives {world} processes a slice of a batch of {min(batches)}"
    )
    return (
        f"batch size {b} is not {world} or more whole ghost batches of {ghost} (each process "
        f"needs at least one; a step is split in whole ghost batches, unevenly if need be); "
        f"{fewer}{other}"
    )


def from_environment(device: str | None) -> Replica:
    """Join the torchrun job this process belongs to (NCCL on CUDA, gloo on the CPU).

    ``device``: "cpu", "cuda" or None (CUDA when available): each process takes the GPU of
    its LOCAL_RANK.
    """
    env = launch_env()
    rank, world, local = env.rank, env.world, env.local
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch_device = torch.device("cuda", local)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            device_id=torch_device if use_cuda else None,
        )
    return Replica(rank=rank, world=world, device=torch_device)


def shutdown() -> None:
    """Leave the process group, if this process joined one (so torchrun's processes exit).

    Garbage is collected first: a finished cell's DDP wrapper and its reducer sit in reference
    cycles, and freed only at interpreter exit, after the group, they aborted a gloo process
    now and then ("terminate called without an active exception": 6 of 36 two-process runs
    on torch 2.13 CPU, 0 of 46 with the collection; scripts/torchrun_exit_loop.sh)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
