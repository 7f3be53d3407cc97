"""harness: test "Don't Decay the Learning Rate, Increase the Batch Size" on real hardware.

The package root is also the public API for using the paper's schedules in your own loop
(docs/own-loop.md). The schedule algebra is pure Python and imported here; the two names that
need torch (`PlanBatchSampler`, `PlanLR`, and `ghost_bn`, which makes any model's batch norms
ghost batch norms) load on first use, so `import harness` stays
torch-free and `harness plan` answers at once. `harness.lightning` (`PlanCallback`, the plan in
a Lightning `Trainer`; the optional extra `[lightning]`) is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.allocator import tune_once as tune_allocator
from harness.core.query import Hyperparams, at_epoch, at_step, micro_batches
from harness.core.schedule import (
    BaseSchedule,
    Phase,
    Plan,
    ScheduleError,
    noise_scale,
    realize,
    scaled_batch_size,
    updates_per_epoch,
)
from harness.errors import UserError, exit_on_user_error
from harness.version import __version__

if TYPE_CHECKING:
    from harness.data.sampler import PlanBatchSampler
    from harness.models.ghost_convert import ghost_bn
    from harness.train.plan_lr import PlanLR

__all__ = [
    "BaseSchedule",
    "Hyperparams",
    "Phase",
    "Plan",
    "PlanBatchSampler",
    "PlanLR",
    "ScheduleError",
    "UserError",
    "__version__",
    "at_epoch",
    "at_step",
    "exit_on_user_error",
    "ghost_bn",
    "micro_batches",
    "noise_scale",
    "realize",
    "scaled_batch_size",
    "tune_allocator",
    "updates_per_epoch",
]

_LAZY = {
    "PlanBatchSampler": "harness.data.sampler",
    "PlanLR": "harness.train.plan_lr",
    "ghost_bn": "harness.models.ghost_convert",
}


def __getattr__(name: str) -> Any:
    # PEP 562: the torch-needing names are imported only when first asked for, and the
    # `harness.lightning` module (the optional extra) only when asked for by name.
    import importlib

    if name == "lightning":
        return importlib.import_module("harness.lightning")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "lightning"})
