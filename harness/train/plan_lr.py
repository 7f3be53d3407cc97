"""The plan's lr (and SGD's momentum) in a plain PyTorch loop: `PlanLR`, the public scheduler.

`PlanLR` is a `torch.optim.lr_scheduler.LRScheduler` that sets the plan's lr (and SGD's
momentum) at every optimizer step; `set_hyperparameters_at` does the same once, at a given
step (the Lightning callback's hook). Both are pure functions of a position in the plan, so
resuming is restoring a position, and they agree by construction with `harness.at_step`.
The batches of the same plan come from `harness.data.sampler.PlanBatchSampler`; a harness
cell's own training sets a phase's values with `harness.train.optim.set_hyperparameters`.
"""

from __future__ import annotations

from typing import Any

from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import LRScheduler

from harness.core.query import at_step
from harness.core.schedule import Plan

__all__ = ["PlanLR", "set_hyperparameters_at"]


def set_hyperparameters_at(optimizer: Optimizer, plan: Plan, step: int) -> None:
    """Write the plan's lr at optimizer step `step` into every param group of `optimizer`, and
    for `torch.optim.SGD` its momentum (after the plan's last step, its last values)."""
    hp = at_step(plan, min(max(step, 0), plan.updates - 1))
    for group in optimizer.param_groups:
        group["lr"] = hp.lr
        if isinstance(optimizer, SGD):
            group["momentum"] = hp.momentum


class PlanLR(LRScheduler):
    """Sets every param group's lr to the plan's lr at each optimizer step; for
    `torch.optim.SGD` also its momentum to the plan's.

    Call `scheduler.step()` after each `optimizer.step()`, as with any `LRScheduler`: step
    counts optimizer steps, never epochs or micro-batches. After the plan's last step the lr
    stays at its final value. Resume with `load_state_dict` after the optimizer's own
    `load_state_dict`; the state holds plain numbers only (safe for `weights_only=True`).

    The plan's lr is absolute: it replaces each group's lr. Other optimizers keep their own
    momentum: for Adam, beta1 is left alone, since the noise scale treats Adam's m as 0
    (realize Adam plans with `momentum=0`).
    """

    def __init__(self, optimizer: Optimizer, plan: Plan, last_step: int = -1) -> None:
        # Set before the base class runs its first step(), which calls get_lr().
        self.plan = plan
        super().__init__(optimizer, last_epoch=last_step)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The plan's lr at optimizer step `last_epoch` (the base class's name for it)."""
        step = min(max(self.last_epoch, 0), self.plan.updates - 1)
        return [at_step(self.plan, step).lr for _ in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        """Move to the next optimizer step: set its lr (and SGD momentum)."""
        super().step(epoch)
        if isinstance(self.optimizer, SGD):
            step = min(max(self.last_epoch, 0), self.plan.updates - 1)
            momentum = at_step(self.plan, step).momentum
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum

    @property
    def steps_done(self) -> int:
        """Optimizer steps taken (the `step()` calls): what `PlanBatchSampler.state_dict` needs."""
        return max(self.last_epoch, 0)

    def state_dict(self) -> dict[str, Any]:
        """The base class's state without the plan object (the plan is rebuilt, not stored)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "plan")}
