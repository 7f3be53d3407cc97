"""The schedule algebra: a base schedule and a realization give phases of (lr, B, m).

Everything here is a pure function of explicitly passed numbers (no torch, no config objects),
so `harness plan` is instant and the invariants can be property-tested.

Vocabulary (see docs/ARCHITECTURE.md, "Semantics every layer shares"):
- the *multiplier* mu(e) of a base schedule is what a plain lr schedule would multiply the
  initial lr by during epoch e (step drops, cosine, linear warm-up);
- a *realization* decides how each drop of mu is made: by the lr, by the batch size, or by the
  batch size for the first k drops and the lr after that (hybrid). Only the decay is realized
  by the batch: a warm-up stays an lr ramp at the initial batch size (see `realize`);
- the schedule conserves the *temperature* lr / (B (1 - m)) that a plain lr schedule would have,
  which is the paper's noise scale g = lr/(1-m) (N/B - 1) in its B << N limit. The exact g is
  reported for every phase; across realizations it differs only by the (1 - B/N) factor.

Inconsistent numbers are refused, not repaired: a `BaseSchedule` or a `realize` call that
breaks a rule (`harness.core.rules`) raises `ScheduleError`, whose `field` names the offending
argument, so every caller (a suite, a test, a notebook) gets the same rules and advice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from harness.core.realizations import EpochValues, Start, realization_kind

# The limits are re-exported: the config layer reads them from here.
from harness.core.rules import MAX_BATCH_SIZE as MAX_BATCH_SIZE
from harness.core.rules import MAX_EPOCHS as MAX_EPOCHS
from harness.core.rules import MAX_TRAIN_SIZE as MAX_TRAIN_SIZE
from harness.core.rules import (
    WARMUPS,
    Realization,
    ScheduleError,
    Shape,
    Warmup,
    check_base,
    check_realization,
)


@dataclass(frozen=True)
class BaseSchedule:
    """How the noise scale falls, independent of how the fall is realized."""

    epochs: int
    shape: Shape = "step"
    milestones: tuple[int, ...] = ()
    factor: float = 10.0
    warmup_epochs: int = 0
    min_multiplier: float = 0.0  # cosine only: the multiplier the curve ends at

    def __post_init__(self) -> None:
        check_base(self)

    def multiplier(self, epoch: int) -> float:
        """mu(epoch) in (0, 1]: the factor a plain lr schedule applies during `epoch` (0-based).

        It is `warmup_factor(epoch) / decay(epoch)`: the warm-up ramp times the decay.
        """
        return 1.0 / self.divisor(epoch)

    def divisor(self, epoch: int) -> float:
        """1 / mu(epoch), computed so that step schedules stay exact powers of `factor`."""
        warm = 1.0
        if epoch < self.warmup_epochs:
            warm = (self.warmup_epochs + 1) / (epoch + 1)
        if self.shape == "step":
            return warm * self.factor ** self._drops(epoch)
        return warm / self._cosine(epoch)

    def warmup_factor(self, epoch: int) -> float:
        """The linear warm-up ramp in (0, 1]: (epoch + 1) / (warmup_epochs + 1) during warm-up,
        1 after it; never zero, so the first epoch already trains."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        return 1.0

    def decay(self, epoch: int) -> float:
        """How far the noise scale has fallen by `epoch`, without the warm-up: >= 1.

        A step shape gives factor ** (milestones passed), exactly; a cosine 1 / its curve.
        Only this part of the schedule may be realized by the batch size (see `realize`).
        """
        if self.shape == "step":
            return self.factor ** self._drops(epoch)
        return 1.0 / self._cosine(epoch)

    def _drops(self, epoch: int) -> int:
        return sum(1 for m in self.milestones if m <= epoch)

    def _cosine(self, epoch: int) -> float:
        progress = epoch / self.epochs
        return self.min_multiplier + (1.0 - self.min_multiplier) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


@dataclass(frozen=True)
class Phase:
    """Epochs [start_epoch, end_epoch) trained with constant hyper-parameters."""

    start_epoch: int
    end_epoch: int
    lr: float
    batch_size: int
    momentum: float
    noise_scale: float
    updates: int  # optimizer steps in this phase, never micro-batches

    @property
    def epochs(self) -> int:
        """Epochs in this phase."""
        return self.end_epoch - self.start_epoch

    def as_dict(self) -> dict[str, float | int]:
        """The phase as plain numbers (the JSON form `harness plan` prints). Its fields are
        numbers, so no deep copy (`dataclasses.asdict` was a quarter of `plan --json`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Plan:
    """A realized schedule: consecutive phases from epoch 0, on `train_size` examples per epoch.

    `drop_last` says whether each epoch's partial batch is dropped (floor(N/B) steps per epoch,
    the paper's counts) or kept as a last, smaller batch (ceil(N/B)).
    """

    phases: tuple[Phase, ...]
    train_size: int
    drop_last: bool

    @property
    def epochs(self) -> int:
        """Epochs of the whole plan."""
        return self.phases[-1].end_epoch

    @property
    def updates(self) -> int:
        """Optimizer steps of the whole plan (never micro-batches)."""
        return sum(p.updates for p in self.phases)

    def phase_at(self, epoch: int) -> Phase:
        """The phase that trains epoch `epoch` (0-based)."""
        for phase in self.phases:
            if phase.start_epoch <= epoch < phase.end_epoch:
                return phase
        raise IndexError(f"epoch {epoch} is outside the plan's {self.epochs} epochs")

    def epochs_lost(self) -> tuple[float, ...]:
        """Per phase, the paper's estimate of the epochs lost while the momentum accumulation
        grows in (Appendix A, eq. 12): `epochs_lost(B, N, m)` of the phase."""
        return tuple(epochs_lost(p.batch_size, self.train_size, p.momentum) for p in self.phases)

    def updates_before(self, epoch: int) -> int:
        """Optimizer steps taken before epoch `epoch` starts (0-based)."""
        return sum(
            updates_per_epoch(self.train_size, p.batch_size, self.drop_last)
            * max(0, min(epoch, p.end_epoch) - p.start_epoch)
            for p in self.phases
        )


def noise_scale(lr: float, momentum: float, batch_size: int, train_size: int) -> float:
    """The paper's g = lr / (1 - m) * (N / B - 1)  (Smith & Le 2017; eq. 5)."""
    return lr / (1.0 - momentum) * (train_size / batch_size - 1.0)


def epochs_lost(batch_size: int, train_size: int, momentum: float) -> float:
    """The paper's N_lost = B / (N (1 - m)) (Appendix A, eq. 12-13).

    The accumulation A of SGD with momentum starts at zero and grows in as
    1 - exp(-(1 - m) s) over s = (N/B) epochs' updates; the integral of the shortfall is the
    number of epochs whose updates are effectively lost. Sec. 4 says the same delay recurs at
    every change of the noise scale, so it is given per phase. For plain SGD and Adam the
    plan's momentum is 0 (Adam's first moment is normalized by 1 - β₁), which gives B / N.
    """
    return batch_size / (train_size * (1.0 - momentum))


def updates_per_epoch(train_size: int, batch_size: int, drop_last: bool = True) -> int:
    """floor(N/B): the partial batch is dropped (this matches every count the paper states)."""
    if drop_last:
        return train_size // batch_size
    return -(-train_size // batch_size)


def scaled_batch_size(
    base_batch: int, base_lr: float, base_momentum: float, lr: float, momentum: float
) -> float:
    """The scaling rules B ∝ lr and B ∝ 1/(1-m), applied to a base recipe."""
    return base_batch * (lr / base_lr) * ((1.0 - base_momentum) / (1.0 - momentum))


def realize(
    base: BaseSchedule,
    *,
    lr: float,
    batch_size: int,
    momentum: float,
    train_size: int,
    realization: Realization = "lr",
    batch_drops: int = 0,
    b_max: int | None = None,
    ghost: int = 1,
    drop_last: bool = True,
    warmup: Warmup = "lr",
    options: Mapping[str, Any] | None = None,
) -> Plan:
    """Phases of one realization of `base`, starting from (lr, batch_size, momentum).

    `realization` names a planned one of `harness.core.realizations.REALIZATIONS`, whose
    `epochs` gives each epoch's (lr, B, m); `options` its own fields beyond `batch_drops`
    (hybrid's). The paper's three follow one rule (`realizations.by_batch`), stated here.

    The batch realizes the *decay* only. The multiplier of epoch e is
    mu(e) = warmup_factor(e) / decay(e); every realization trains epoch e with

        wanted = B0 * decay(e)                      (lr realization: B = B0)
        B      = wanted rounded down to a multiple of `ghost`, capped at b_max
                 (hybrid: also at B0 * factor**batch_drops), never below B0
        lr     = lr0 * warmup_factor(e) * B / wanted

    Warm-up rule: warm-up stays an lr ramp in every realization. The ramp never enlarges the
    batch, so during warm-up B = B0 and lr = lr0 * warmup_factor(e) (unless a decay already
    falls inside the warm-up); warm-up is there for stability at the start, which a full lr
    from step 0 would defeat. `warmup="batch"` realizes the ramp by the batch as well
    (B = B0 / mu(e) at full lr; the lr realization is unaffected).

    Rounding rule: whatever the batch cannot absorb, through the ghost-size rounding or a
    cap, the lr takes, so lr / B of every phase equals the lr realization's lr / B0 (to float
    rounding) and lr never exceeds lr0. Between ghost multiples the lr dips by at most a
    factor B / (B + ghost) and recovers: a small saw-tooth, by design. The temperature
    lr / (B (1 - m)) is therefore the same in every realization, and the paper's noise scale
    g = lr/(1-m) (N/B - 1) drifts from the lr realization's only through its (1 - B/N)
    factor: g = g_lr * (1 - B/N) / (1 - B0/N), below it by the fraction (B - B0) / (N - B0),
    which is less than B/N.

    `ScheduleError` if the arguments break a rule (B not a multiple of `ghost`, `b_max` below
    B, hybrid without a step shape, a batch larger than the training set, ...); `batch_drops`
    is read only by the hybrid realization.
    """
    check_realization(
        base,
        lr=lr,
        batch_size=batch_size,
        momentum=momentum,
        train_size=train_size,
        b_max=b_max,
        ghost=ghost,
    )
    kind = realization_kind(realization)
    if kind.step_shape and base.shape != "step":
        raise ScheduleError("realization", f"{kind.name} needs a step shape with milestones")
    start = Start(
        lr=lr,
        batch_size=batch_size,
        momentum=momentum,
        b_max=b_max,
        ghost=ghost,
        warmup=warmup,
        options={"batch_drops": batch_drops, **(options or {})},
    )
    if kind.check is not None:
        kind.check(start)
    if warmup not in WARMUPS:
        raise ScheduleError("warmup", f"{warmup!r} is not one of {', '.join(WARMUPS)}")
    if kind.epochs is None:
        raise ScheduleError(
            "realization",
            f"{kind.name}: its batch is decided while training, not in advance; plan it "
            "with its rule (harness.core.schedule_request.DECIDED)",
        )
    epochs = kind.epochs(base, start)
    plan = Plan(merge_epochs(epochs, train_size, drop_last), train_size, drop_last)
    for phase in plan.phases:
        if phase.batch_size > train_size or phase.updates == 0:
            first = phase.batch_size == batch_size
            raise ScheduleError(
                "batch_size" if first else "b_max",
                f"batch size {phase.batch_size} in epochs {phase.start_epoch}-{phase.end_epoch} "
                f"exceeds the training set ({train_size} examples); "
                + ("lower it" if first else f"set b_max <= {train_size}"),
            )
    return plan


def merge_epochs(
    epochs: Sequence[EpochValues], train_size: int, drop_last: bool
) -> tuple[Phase, ...]:
    """Phases of per-epoch (lr, B, m): consecutive equal epochs merged, each with its noise
    scale and update count."""
    phases: list[Phase] = []
    start = 0
    for end in range(1, len(epochs) + 1):
        if end < len(epochs) and epochs[end] == epochs[start]:
            continue
        lr, batch, momentum = epochs[start]
        phases.append(
            Phase(
                start_epoch=start,
                end_epoch=end,
                lr=lr,
                batch_size=batch,
                momentum=momentum,
                noise_scale=noise_scale(lr, momentum, batch, train_size),
                updates=updates_per_epoch(train_size, batch, drop_last) * (end - start),
            )
        )
        start = end
    return tuple(phases)
