"""The rules a schedule's numbers obey, and the error that names a broken one.

`BaseSchedule` and `realize` (in `harness.core.schedule`) call these checks, so every caller
(a suite, `harness convert`, a notebook) gets the same rules with the same advice. A broken
rule is a `ScheduleError` whose `field` names the argument and whose message says how to fix
it; inconsistent numbers are refused, never repaired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol

from harness.errors import UserError

Shape = Literal["step", "cosine"]
Realization = str  # a registered realization's name (harness.core.realizations)
Warmup = Literal["lr", "batch"]
SHAPES: tuple[Shape, ...] = ("step", "cosine")
WARMUPS: tuple[Warmup, ...] = ("lr", "batch")

# Far above any real recipe (the paper trains 200 epochs, ImageNet has 1.28M images, the
# largest batch it uses is 81920), low enough that planning stays instant and no count
# overflows: a typo like `epochs: 1e11` must be refused, not planned for hours.
MAX_EPOCHS = 100_000
MAX_TRAIN_SIZE = 100_000_000
MAX_BATCH_SIZE = 2**24


class BaseFields(Protocol):
    """The fields of a base schedule that the rules read (`BaseSchedule` has them); the rules
    stay below the schedule so that the two never import each other."""

    @property
    def epochs(self) -> int: ...
    @property
    def shape(self) -> str: ...
    @property
    def milestones(self) -> Sequence[int]: ...
    @property
    def factor(self) -> float: ...
    @property
    def warmup_epochs(self) -> int: ...
    @property
    def min_multiplier(self) -> float: ...


class ScheduleError(UserError, ValueError):
    """A schedule rule is broken; `field` names the argument, the message says how to fix it.

    A user's mistake by definition (the values came from them), so a `UserError`: a script
    under `harness.exit_on_user_error()` shows it as the CLI does, one line and exit 2."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def check_base(base: BaseFields) -> None:
    """`ScheduleError` unless the base schedule's fields obey every rule."""
    epochs, milestones = base.epochs, base.milestones
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 0 < epochs <= MAX_EPOCHS:
        raise ScheduleError("epochs", f"{epochs!r} must be a whole number in 1..{MAX_EPOCHS}")
    if base.shape not in SHAPES:
        raise ScheduleError("shape", f"{base.shape!r} is not one of {', '.join(SHAPES)}")
    if base.shape == "step":
        if list(milestones) != sorted(set(milestones)):
            raise ScheduleError(
                "milestones", f"{list(milestones)} must be strictly increasing epochs"
            )
        if milestones and not milestones[0] > 0:
            raise ScheduleError("milestones", f"{list(milestones)} must be epochs after 0")
        if milestones and milestones[-1] >= epochs:
            raise ScheduleError(
                "milestones",
                f"milestone {milestones[-1]} is not before the last epoch ({epochs}); "
                "drop it or raise epochs",
            )
    elif milestones:
        raise ScheduleError(
            "milestones", "only a step shape has milestones; remove them or use step"
        )
    if not (math.isfinite(base.factor) and base.factor > 1):
        raise ScheduleError("factor", f"{base.factor!r} must be a finite number above 1")
    # factor**drops bounds the divisor of a step schedule; kept far from float overflow (1e308)
    # so that B0 * divisor, with warm-up, never becomes inf.
    if len(milestones) * math.log10(base.factor) > 200:
        raise ScheduleError(
            "factor",
            f"{base.factor:g} ** {len(milestones)} milestones overflows; use a smaller factor",
        )
    if not 0 <= base.warmup_epochs < epochs:
        raise ScheduleError("warmup_epochs", f"must be in 0..{epochs - 1} (below epochs)")
    if not 0 <= base.min_multiplier < 1:
        raise ScheduleError("min_multiplier", f"{base.min_multiplier!r} must be in [0, 1)")


def _is_count(value: object, low: int, high: int) -> bool:
    # bool is an int to Python; a batch size of True is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_lr_momentum(lr: float, momentum: float) -> None:
    """`ScheduleError` unless lr is a finite number above 0 and momentum is in [0, 1)."""
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ScheduleError("lr", f"{lr!r} must be a finite number above 0")
    if not (isinstance(momentum, int | float) and 0 <= momentum < 1):
        raise ScheduleError("momentum", f"{momentum!r} must be in [0, 1)")


def check_realization(
    base: BaseFields,
    *,
    lr: float,
    batch_size: int,
    momentum: float,
    train_size: int,
    b_max: int | None,
    ghost: int,
) -> None:
    """`ScheduleError` unless the numbers a realization starts from obey every rule (see
    `realize`'s docstring); the realization's own rules are its descriptor's
    (`harness.core.realizations`)."""
    check_lr_momentum(lr, momentum)
    if not _is_count(train_size, 1, MAX_TRAIN_SIZE):
        raise ScheduleError(
            "train_size", f"{train_size!r} must be a whole number in 1..{MAX_TRAIN_SIZE}"
        )
    if not _is_count(ghost, 1, MAX_BATCH_SIZE):
        raise ScheduleError("ghost", f"{ghost!r} must be a whole number in 1..{MAX_BATCH_SIZE}")
    if not _is_count(batch_size, 1, MAX_BATCH_SIZE):
        raise ScheduleError(
            "batch_size", f"{batch_size!r} must be a whole number in 1..{MAX_BATCH_SIZE}"
        )
    if batch_size % ghost:
        raise ScheduleError(
            "batch_size",
            f"{batch_size} is not a multiple of the ghost batch size {ghost}; "
            f"use {max(ghost, round(batch_size / ghost) * ghost)}",
        )
    if b_max is not None:
        if not _is_count(b_max, 1, MAX_BATCH_SIZE):
            raise ScheduleError("b_max", f"{b_max!r} must be a whole number in 1..{MAX_BATCH_SIZE}")
        if b_max < batch_size:
            raise ScheduleError(
                "b_max", f"{b_max} is below the initial batch size {batch_size}; raise it"
            )
        if b_max % ghost:
            raise ScheduleError(
                "b_max",
                f"{b_max} is not a multiple of the ghost batch size {ghost}; "
                f"use {b_max // ghost * ghost}",
            )
