"""One epoch of a job: its random streams, its steps, a pause between two of them, and the
untimed warm-up over the plan's step shapes.

`stream_seed` names the job's random streams (initial weights, each epoch's order and
augmentation: pure functions of the seed and the epoch, see harness.train.loop). `train_epoch`
asks the data source for the epoch's steps and runs each (`train.step.train_on`); a `stop` vote
between two steps raises `Interrupted` with what the rest of the epoch needs
(`PartialEpoch`), and `resume` continues it. The order of a cell's epochs is train.loop's.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from harness.core.execution import Execution
from harness.core.schedule import Phase, updates_per_epoch
from harness.data.device import DeviceData
from harness.data.source import DataSource, EpochCursor
from harness.data.text import SequenceData
from harness.train.noise import NoiseMeter
from harness.train.preempt import Interrupted, PartialEpoch
from harness.train.replica import Replica
from harness.train.runtime import synchronize
from harness.train.spec import TrainJob
from harness.train.step import evaluate, step_micro_batch, train_on


def stream_seed(seed: int, *stream: object) -> int:
    """A 63-bit seed for one named random stream of a job; stable across runs and machines."""
    key = "/".join(str(s) for s in (seed, *stream)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataSource,
    job: TrainJob,
    epoch: int,
    phase: Phase,
    execution: Execution,
    replica: Replica | None = None,
    *,
    meter: NoiseMeter | None = None,
    stop: Callable[[], bool] | None = None,
    resume: PartialEpoch | None = None,
) -> tuple[float, int]:
    """Train one epoch; returns (mean training loss over its steps, steps in the epoch).

    The data source turns the epoch's order and augmentation seeds into its steps; every
    process of a data-parallel job asks for the same steps and gets its share of each (see
    harness.train.replica).

    `stop` (a collective under a replica: harness.train.preempt.StopVote) is asked after every
    step but the last; when it says so the epoch raises `Interrupted` with what the rest of it
    needs (None for a source that cannot start mid-epoch). `resume` continues such an epoch."""
    device = data.device
    batch = phase.batch_size
    steps = updates_per_epoch(data.n_train, batch, job.drop_last)
    world = 1 if replica is None else replica.world
    shard = None if replica is None else replica.shard(job.ghost_batch_size)
    share = batch if shard is None else shard.size(batch)
    micro = step_micro_batch(share, execution, job.ghost_batch_size)
    order_seed = stream_seed(job.seed, "order", epoch)
    augment_seed = stream_seed(job.seed, "augment", epoch)
    model.train()
    losses = torch.zeros((), device=device, dtype=torch.float64)
    cursor = None
    if resume is not None or stop is not None:
        cursor = EpochCursor(0 if resume is None else resume.step)
    if resume is not None and (replica is None or replica.is_main):
        losses += resume.loss_sum * world  # the job's so far, in this job's units (see below)
    # The sources that can start an epoch mid-way (a pure function of its seeds and the step).
    resumable = isinstance(data, DeviceData | SequenceData)
    if isinstance(data, DeviceData | SequenceData) and cursor is not None:
        batches = data.epoch_batches(order_seed, augment_seed, batch, steps, micro, shard, cursor)
    else:
        batches = data.epoch_batches(order_seed, augment_seed, batch, steps, micro, shard)
    for taken, step in enumerate(batches, start=1 if cursor is None else cursor.step + 1):
        losses += train_on(
            model, optimizer, data, step, job.precision, replica, meter, keep_grads=execution.graphs
        )
        if stop is not None and taken < steps and stop():
            partial = _partial_epoch(epoch, taken, losses, cursor if resumable else None, replica)
            raise Interrupted(partial)
    if replica is not None:  # each process's loss is its share's mean: average the shares
        replica.all_reduce([losses])
    # The one host sync of the epoch: reading the loss.
    return float(losses) / (steps * world), steps


def _partial_epoch(
    epoch: int, taken: int, losses: torch.Tensor, cursor: Any, replica: Replica | None
) -> PartialEpoch | None:
    if cursor is None:
        return None  # the source cannot start mid-epoch: the epoch's checkpoint stands
    world = 1
    if replica is not None:  # rank 0's checkpoint holds every process's share
        replica.all_reduce([losses])
        world = replica.world
    # In one process's units (the sum of the steps' mean losses), so that a cell paused by N
    # processes resumes with any number of them.
    loss_sum = float(losses) / world
    # A source without augmentation (SequenceData) has no generator to record.
    state = None if cursor.generator is None else cursor.generator.get_state()
    return PartialEpoch(epoch, taken, loss_sum, augment_state=state)


def _warmup_calls(execution: Execution, device: torch.device) -> int:
    """Calls per shape before the timed epochs: one compiles (and autotunes cuDNN); CUDA graph
    trees ("reduce-overhead") run a shape's first call eagerly, record it on the second and
    replay from the third, so they need three for no recording to land in a timed epoch."""
    return 3 if execution.graphs and device.type == "cuda" else 1


def warm_up(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataSource,
    job: TrainJob,
    execution: Execution,
    replica: Replica | None = None,
    batches: Iterable[int] | None = None,
    evaluation: bool = True,
) -> float:
    """Run the real `train_step` once per (batch, micro-batch) shape of the plan (or of
    `batches`: an adaptive job's), and one evaluation unless not `evaluation`, untimed; then
    restore the weights, BN statistics and optimizer state.

    Compilation and cuDNN autotuning happen on the first call of each shape (forward, backward
    and optimizer update alike); without this they would land in the first epoch of each
    phase. Going through `train_step` itself means whatever it runs is warmed, not a copy of
    it. Returns the seconds spent.
    """
    device = data.device
    start = time.perf_counter()
    base = getattr(model, "_orig_mod", model)  # the module under torch.compile's wrapper
    saved_model = {k: v.clone() for k, v in base.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    lrs = [group["lr"] for group in optimizer.param_groups]
    shard = None if replica is None else replica.shard(job.ghost_batch_size)

    def share(batch: int) -> int:
        return batch if shard is None else shard.size(batch)

    shapes = sorted(
        {
            (batch, step_micro_batch(share(batch), execution, job.ghost_batch_size))
            for batch in (batches or [p.batch_size for p in job.plan.phases])
        }
    )
    model.train()
    for batch, micro in shapes:
        step = data.warmup_batch(batch, micro, shard)
        for _ in range(_warmup_calls(execution, device)):
            train_on(
                model, optimizer, data, step, job.precision, replica, keep_grads=execution.graphs
            )
    for _ in range(_warmup_calls(execution, device) if evaluation else 0):
        evaluate(model, data, execution.eval_batch_size, job.precision, replica=replica)
    base.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)
    # load_state_dict puts the saved lr tensors in the groups; keep the ones the caller holds.
    for group, lr in zip(optimizer.param_groups, lrs):
        if isinstance(lr, torch.Tensor):
            lr.copy_(group["lr"])
            group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start
