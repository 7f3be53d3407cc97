"""What the training layer is asked to do: small frozen values, no config objects, no torch.

The application layer (harness.app.jobs) translates a suite's cell into a `TrainJob` (what to
train: every value that can change the numbers, all part of the cell id). How to run it (memory
and speed settings that must never change the numbers) is `harness.core.execution.Execution`,
the type a suite's `execution:` validates into, passed on as it is. Anyone can build these
without a suite file, e.g. a test or a user's own script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.decided import DecidedSchedule, Decision, plan_after
from harness.core.factory_spec import FactoryRef
from harness.core.kinds import BnStats, OptimizerKind, Precision
from harness.core.realizations import REFERENCE
from harness.core.schedule import Plan


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer recipe; `lr` and `momentum` are the starting values the plan overrides."""

    kind: OptimizerKind
    lr: float  # per optimizer step, for the mean loss over the batch
    momentum: float = 0.0  # SGD's momentum coefficient; 0 for sgd, adam and adamw
    betas: tuple[float, float] = (0.9, 0.999)  # adam and adamw only
    eps: float = 1e-8  # adam and adamw only
    weight_decay: float = 0.0  # L2 coefficient (decoupled decay for adamw), by the optimizer


@dataclass(frozen=True)
class ModelConfig:
    """A registered model name (harness.models) and its integer parameters, or the user's
    own model: `factory` (harness.core.factory_spec), and `name` the suite's name for it."""

    name: str
    params: tuple[tuple[str, int], ...] = ()  # sorted (name, value) pairs: hashable
    factory: FactoryRef | None = None

    @classmethod
    def of(cls, name: str, **params: int) -> ModelConfig:
        return cls(name, tuple(sorted(params.items())))


@dataclass(frozen=True)
class TrainJob:
    """Everything that determines a cell's numbers."""

    cell_id: str  # names checkpoints and rows; a hash of the resolved config
    label: str  # for messages: experiment/optimizer/schedule/seedN
    seed: int  # the root of the init, data-order and augmentation streams
    model: ModelConfig
    optimizer: OptimizerConfig
    plan: Plan  # phases of (lr, batch size, momentum) per epoch, from harness.core
    num_classes: int = 10
    ghost_batch_size: int = 128  # examples per batch-norm slice
    drop_last: bool = True
    eval_every: int = 1  # epochs between test evaluations (the last epoch always evaluates)
    precision: Precision = "fp32"
    # "precise": before each evaluation the running batch-norm statistics are recomputed from
    # the first `bn_stats_images` training images (harness.train.step.precise_bn_stats) and
    # kept (evaluation uses them, the checkpoint holds them); "ema": the running average.
    bn_stats: BnStats = "ema"
    bn_stats_images: int = 4096
    # The realization's name (harness.core.realizations): one decided while training has its
    # decision hook in harness.train.decisions.
    realization: str = REFERENCE
    # A realization decided while training: its rule (harness.core.decided; `adaptive`, the
    # batch from the measured B_simple, is one); `plan` is then the plan before any decision.
    decided: DecidedSchedule | None = None

    def plan_for(self, decisions: Sequence[Decision]) -> Plan:
        """The plan that training follows after `decisions` (a decided job's), else `plan`."""
        return plan_after(self.plan, self.decided, decisions)
