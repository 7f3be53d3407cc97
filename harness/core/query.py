"""Asking a plan what to train with at an epoch or an optimizer step, without torch.

This module owns the per-epoch and per-step lookups and the micro-batch count that a user's
own loop needs (the package root re-exports them as the public API; the sampler and the
scheduler that do need torch live in `harness.data.sampler` and `harness.train.plan_lr`). All
are pure functions of explicitly passed numbers.

    base = BaseSchedule(epochs=200, milestones=(60, 120, 160), factor=5)
    plan = realize(base, lr=0.1, batch_size=128, momentum=0.9, train_size=50_000,
                   realization="batch")
    plan.updates                     # 28800 optimizer steps
    at_step(plan, 23_400)            # Hyperparams(epoch=60, ..., batch_size=640, ...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.core.schedule import Plan, updates_per_epoch


@dataclass(frozen=True)
class Hyperparams:
    """What to train with at one optimizer step of a plan.

    `step` counts optimizer steps from the start of training (0-based), `step_in_epoch` from
    the start of `epoch`; `lr` is per optimizer step on the mean loss of the batch;
    `batch_size` is the global batch in examples (all data-parallel ranks together).
    """

    epoch: int
    step: int
    step_in_epoch: int
    lr: float
    batch_size: int
    momentum: float


def at_epoch(plan: Plan, epoch: int) -> Hyperparams:
    """The hyper-parameters of `epoch` (0-based); `step` is the epoch's first optimizer step."""
    phase = plan.phase_at(epoch)
    return Hyperparams(
        epoch=epoch,
        step=plan.updates_before(epoch),
        step_in_epoch=0,
        lr=phase.lr,
        batch_size=phase.batch_size,
        momentum=phase.momentum,
    )


def at_step(plan: Plan, step: int) -> Hyperparams:
    """The hyper-parameters of optimizer step `step` (0-based, below `plan.updates`).

    Raises IndexError outside the plan. Steps are counted as the sampler hands out batches:
    epoch e has `updates_per_epoch(N, B_e, drop_last)` of them.
    """
    if not 0 <= step < plan.updates:
        raise IndexError(f"step {step} is outside the plan's {plan.updates} optimizer steps")
    first = 0
    for phase in plan.phases:
        if step < first + phase.updates:
            per_epoch = updates_per_epoch(plan.train_size, phase.batch_size, plan.drop_last)
            offset, in_epoch = divmod(step - first, per_epoch)
            return Hyperparams(
                epoch=phase.start_epoch + offset,
                step=step,
                step_in_epoch=in_epoch,
                lr=phase.lr,
                batch_size=phase.batch_size,
                momentum=phase.momentum,
            )
        first += phase.updates
    raise AssertionError("unreachable: phase updates sum to plan.updates")


def micro_batches(batch_size: int, max_micro_batch: int) -> int:
    """How many micro-batches a step of `batch_size` examples needs when at most
    `max_micro_batch` fit in memory: ceil(B / max).

    Accumulate their gradients before one optimizer step, weighting each micro-batch's mean
    loss by its share of the batch (len(micro) / B), so the step equals one of the whole batch.
    The optimizer-step count (and so the schedule) never depends on this number.
    """
    if batch_size < 1 or max_micro_batch < 1:
        raise ValueError(
            f"batch_size ({batch_size}) and max_micro_batch ({max_micro_batch}) must be >= 1"
        )
    return math.ceil(batch_size / max_micro_batch)
