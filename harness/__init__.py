"""harness: test "Don't Decay the Learning Rate, Increase the Batch Size" on real hardware.

The package root is also the public API for using the paper's schedules in your own loop
(docs/own-loop.md). The schedule algebra is pure Python and imported here; the two names that
need torch (`PlanBatchSampler`, `PlanLR`) load on first use, so `import harness` stays
torch-free and `harness plan` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.api import (
    BaseSchedule,
    Hyperparams,
    Phase,
    Plan,
    at_epoch,
    at_step,
    micro_batches,
    noise_scale,
    realize,
    scaled_batch_size,
    updates_per_epoch,
)

if TYPE_CHECKING:
    from harness.sampler import PlanBatchSampler, PlanLR

__version__ = "0.1.0"

__all__ = [
    "BaseSchedule",
    "Hyperparams",
    "Phase",
    "Plan",
    "PlanBatchSampler",
    "PlanLR",
    "at_epoch",
    "at_step",
    "micro_batches",
    "noise_scale",
    "realize",
    "scaled_batch_size",
    "updates_per_epoch",
]

_LAZY = {"PlanBatchSampler": "harness.sampler", "PlanLR": "harness.sampler"}


def __getattr__(name: str) -> Any:
    # PEP 562: the torch-needing names are imported only when first asked for.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
