"""A schedule request, as a suite states it, resolved into exact values and a plan.

This module owns the rules that connect an optimizer's recipe to a named schedule: which
fields a realization takes, when the scaling rules B ∝ lr and B ∝ 1/(1-m) decide the initial
batch size, and the defaults of every schedule field (the dataclass defaults below are the only
copy; the suite layer derives its own from them). It is pure Python so that a request can be
checked and planned without pydantic, YAML or torch, and property-tested directly.

Every broken rule is a `ScheduleError` whose `field` is one of `ScheduleRequest`'s field names,
so the caller can point at the line that set it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from harness.core.adaptive import AdaptiveSchedule
from harness.core.decided import DecidedSchedule
from harness.core.realizations import Start, option_fields, realization_kind
from harness.core.rules import check_lr_momentum
from harness.core.schedule import (
    BaseSchedule,
    Plan,
    Realization,
    ScheduleError,
    Shape,
    realize,
    scaled_batch_size,
)
from harness.core.tempered import TemperedSchedule

# The realizations decided while training (`RealizationKind.epochs` None), by name: each one's
# builder of its rule from the base schedule, the start (its own fields in `options`), N and
# drop_last. One line per decided realization; `tests/test_realizations.py` checks that every
# decided kind has one.
DecidedBuilder = Callable[[BaseSchedule, Start, int, bool], DecidedSchedule]
DECIDED: dict[str, DecidedBuilder] = {
    "adaptive": AdaptiveSchedule.from_start,
    "tempered": TemperedSchedule.from_start,
}


@dataclass(frozen=True)
class ScheduleRequest:
    """What a suite asks of one named schedule, for one optimizer and one training recipe.

    `batch_size` is the initial B stated for this schedule; `base_batch_size` the recipe's B
    at the optimizer's own lr and momentum, which the scaling rules scale when this schedule
    states a new `lr` or `momentum` but no batch size. `base_momentum` is None for an
    optimizer without momentum (plain SGD, Adam): its noise momentum is 0 and cannot change.
    """

    base_lr: float
    train_size: int
    epochs: int | None = None
    shape: Shape = "step"
    milestones: tuple[int, ...] = ()
    factor: float = 10.0  # how much the noise scale drops at each milestone
    warmup_epochs: int = 0
    min_multiplier: float = 0.0  # cosine: the multiplier the curve ends at
    realization: Realization = "lr"
    batch_drops: int | None = None  # hybrid: drops made by the batch size
    batch_size: int | None = None
    base_batch_size: int | None = None
    b_max: int | None = None
    lr: float | None = None  # a new initial lr; B follows B ∝ lr
    momentum: float | None = None  # a new momentum; B follows B ∝ 1/(1-m)
    # decided in training: adaptive (harness.core.adaptive: target, every, grow_only) and
    # tempered (harness.core.tempered: target, every and the four below); None: the default
    target: float | None = None  # B follows target x the measured B_simple
    every: int | None = None  # epochs between decisions
    grow_only: bool | None = None  # B never falls (else never below the initial B)
    window: int | None = None  # epochs of B_simple pooled for a decision
    max_step: float | None = None  # a decision moves B by at most this factor
    hysteresis: float | None = None  # a smaller relative change of B is not made
    lr_max: float | None = None  # the largest lr g may ask for
    base_momentum: float | None = None
    ghost: int = 1  # ghost batch size: every batch is a multiple of it
    drop_last: bool = True


# The fields a suite's schedule entry may set, with their defaults.
SCHEDULE_FIELDS: tuple[str, ...] = (
    "epochs",
    "shape",
    "milestones",
    "factor",
    "warmup_epochs",
    "min_multiplier",
    "realization",
    "batch_drops",
    "batch_size",
    "b_max",
    "lr",
    "momentum",
    "target",
    "every",
    "grow_only",
    "window",
    "max_step",
    "hysteresis",
    "lr_max",
)
SCHEDULE_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(ScheduleRequest) if f.name in SCHEDULE_FIELDS
}


@dataclass(frozen=True)
class ResolvedSchedule:
    """Every schedule field decided, and the phases they give."""

    epochs: int
    shape: Shape
    milestones: tuple[int, ...]
    factor: float
    warmup_epochs: int
    min_multiplier: float
    realization: Realization
    batch_drops: int | None
    batch_size: int
    b_max: int | None
    lr: float
    momentum: float
    plan: Plan  # decided while training: the plan before any decision
    decided: DecidedSchedule | None = None  # the rule of a realization decided in training

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, part of a cell's id: its keys and value types must stay as they are."""
        return {
            "epochs": self.epochs,
            "shape": self.shape,
            "milestones": list(self.milestones),
            "factor": self.factor,
            "warmup_epochs": self.warmup_epochs,
            "min_multiplier": self.min_multiplier,
            "realization": self.realization,
            "batch_drops": self.batch_drops,
            "batch_size": self.batch_size,
            "b_max": self.b_max,
            "lr": self.lr,
            "momentum": self.momentum,
            # Only a decided schedule has its rule's keys: no other cell id changed with them.
            **({} if self.decided is None else self.decided.options()),
        }


def resolve_schedule(request: ScheduleRequest) -> ResolvedSchedule:
    """Check every rule, apply the scaling rules and plan; `ScheduleError` on a broken rule."""
    if request.epochs is None:
        raise ScheduleError("epochs", "required field is missing; set it here or under schedule:")
    base = BaseSchedule(
        epochs=request.epochs,
        shape=request.shape,
        milestones=tuple(request.milestones),
        factor=float(request.factor),
        warmup_epochs=request.warmup_epochs,
        min_multiplier=request.min_multiplier,
    )
    kind = realization_kind(request.realization)
    if kind.step_shape and request.shape != "step":
        raise ScheduleError("realization", f"{kind.name} needs a step shape with milestones")
    for name, why in kind.requires.items():
        if getattr(request, name) is None:
            raise ScheduleError(name, why)
    for name, owners in option_fields().items():
        if kind.name not in owners and getattr(request, name) is not None:
            raise ScheduleError(name, f"only {_either(owners)} realization takes it; remove it")
    if request.momentum is not None and request.base_momentum is None:
        raise ScheduleError(
            "momentum",
            "there is no momentum to change (plain SGD or Adam); give the optimizer a "
            "momentum first (kind: momentum), or remove this one",
        )
    base_momentum = request.base_momentum or 0.0
    lr = request.lr if request.lr is not None else request.base_lr
    momentum = request.momentum if request.momentum is not None else base_momentum
    check_lr_momentum(lr, momentum)  # before the scaling rule divides by them
    batch = _initial_batch(request, lr, momentum, base_momentum)
    decided = None
    if not kind.planned:  # decided while training: its rule, built by its registered builder
        start = Start(
            lr=lr,
            batch_size=batch,
            momentum=momentum,
            b_max=request.b_max,
            ghost=request.ghost,
            warmup="lr",
            options={name: getattr(request, name) for name in kind.takes},
        )
        decided = DECIDED[kind.name](base, start, request.train_size, request.drop_last)
    plan = (
        decided.plan()
        if decided is not None
        else realize(
            base,
            lr=lr,
            batch_size=batch,
            momentum=momentum,
            train_size=request.train_size,
            realization=request.realization,
            batch_drops=request.batch_drops or 0,
            b_max=request.b_max,
            ghost=request.ghost,
            drop_last=request.drop_last,
            options={name: getattr(request, name) for name in kind.takes},
        )
    )
    return ResolvedSchedule(
        epochs=base.epochs,
        shape=base.shape,
        milestones=base.milestones,
        factor=base.factor,
        warmup_epochs=base.warmup_epochs,
        min_multiplier=base.min_multiplier,
        realization=request.realization,
        batch_drops=request.batch_drops,
        batch_size=batch,
        b_max=request.b_max,
        lr=lr,
        momentum=momentum,
        plan=plan,
        decided=decided,
    )


def _either(names: tuple[str, ...]) -> str:
    """'a hybrid', 'an adaptive', 'a hybrid or lr'."""
    said = " or ".join(names)
    return f"{'an' if said[0] in 'aeiou' else 'a'} {said}"


def _initial_batch(
    request: ScheduleRequest, lr: float, momentum: float, base_momentum: float
) -> int:
    """The stated B, or the recipe's B scaled by the rules when only lr / momentum changed."""
    if request.batch_size is not None:
        return request.batch_size
    if request.lr is None and request.momentum is None:
        if request.base_batch_size is None:
            raise ScheduleError("batch_size", "required field is missing; set it under schedule:")
        return request.base_batch_size
    if request.base_batch_size is None:
        raise ScheduleError(
            "batch_size", "the scaling rule needs a base batch_size under schedule:"
        )
    exact = scaled_batch_size(request.base_batch_size, request.base_lr, base_momentum, lr, momentum)
    batch = round(exact) if math.isfinite(exact) else 0
    if batch <= 0 or not math.isclose(batch, exact, rel_tol=1e-9) or batch % request.ghost:
        what = (
            "a whole number of examples"
            if request.ghost == 1
            else f"a multiple of the ghost batch size {request.ghost}"
        )
        raise ScheduleError(
            "batch_size",
            f"the scaling rule gives B = {exact:g}, not {what}; pick an lr or momentum "
            "that gives one, or (in a suite) state this schedule's batch_size",
        )
    return batch
