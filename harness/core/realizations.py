"""Realizations by name: what each one is, one registry that every layer reads.

A realization says how each drop of a base schedule's noise scale is made (by the lr, by the
batch, ...). Its descriptor, `RealizationKind`, is plain data and pure functions: whether it
is *planned* before training (`epochs`, the per-epoch lr, batch and momentum it gives, from
which `harness.core.schedule.realize` makes the phases) or *decided* while training (`epochs`
is None: its rule a `harness.core.decided.DecidedSchedule`, built by its entry of
`harness.core.schedule_request.DECIDED`, its decision hook registered in
`harness.train.decisions`); the schedule fields only it takes; those it cannot do without;
whether it needs a step shape; how a table and a converted suite name it.

`REALIZATIONS` is the registry, in the order realizations are listed (suite docs, errors,
`harness convert`'s columns: from all drops by the lr to all by the batch, then decided);
every comparison of a realization's name in the package reads it, never a string. A new
planned realization is one module with its `epochs` function and one `register(...)` call
(docs/ARCHITECTURE.md, "How to add a realization"); `tests/test_realizations.py` checks that
every entry is complete.

Below `harness.core.schedule` (which plans through it): it imports only the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.core.rules import MAX_EPOCHS, ScheduleError

# The realization every other is compared with: the paper's decaying lr (`harness report`'s
# equivalence table, `harness convert`'s update ratios and noise-scale warnings).
REFERENCE = "lr"


class Curve(Protocol):
    """What a planned realization reads of a base schedule (`BaseSchedule` has it)."""

    @property
    def epochs(self) -> int: ...
    @property
    def factor(self) -> float: ...
    def warmup_factor(self, epoch: int) -> float: ...
    def decay(self, epoch: int) -> float: ...
    def divisor(self, epoch: int) -> float: ...


@dataclass(frozen=True)
class Start:
    """The initial values a planned realization starts from, and its own fields' values
    (`options`: each of `RealizationKind.takes`, e.g. hybrid's `batch_drops`)."""

    lr: float
    batch_size: int
    momentum: float
    b_max: int | None
    ghost: int
    warmup: str  # "lr": the warm-up is an lr ramp at B0; "batch": the batch realizes it too
    options: Mapping[str, Any] = field(default_factory=dict)


# One epoch's (lr, batch size, momentum): what a planned realization gives for each epoch.
EpochValues = tuple[float, int, float]


@dataclass(frozen=True)
class RealizationKind:
    """What one realization is; see the module docstring."""

    name: str  # the suite's `realization:` value
    summary: str  # what it does at each drop, one line
    title: str  # how a table heads its column ("decaying lr")
    suite_name: str  # the schedule name `harness convert` writes for it
    # Planned: the per-epoch (lr, B, m) from the base schedule and the start (each epoch once,
    # in order); None: decided while training.
    epochs: Callable[[Curve, Start], Sequence[EpochValues]] | None = None
    takes: tuple[str, ...] = ()  # schedule fields only this realization takes
    requires: Mapping[str, str] = field(default_factory=dict)  # field -> why it is needed
    step_shape: bool = False  # needs a step shape with milestones
    check: Callable[[Start], None] | None = None  # its own fields' rules (ScheduleError)
    # Its title with its own fields' values, for a table ("hybrid (1 batch drop)").
    label: Callable[[Mapping[str, Any]], str] | None = None

    @property
    def planned(self) -> bool:
        """Whether its plan is fixed before training (else decided while training)."""
        return self.epochs is not None

    def titled(self, options: Mapping[str, Any]) -> str:
        return self.title if self.label is None else self.label(options)


REALIZATIONS: dict[str, RealizationKind] = {}


def register(kind: RealizationKind) -> RealizationKind:
    """Add `kind` to the registry; ValueError for a name already taken or a field that
    another realization's name clashes with."""
    if kind.name in REALIZATIONS:
        raise ValueError(f"realization {kind.name!r} is registered already")
    if not kind.name.isidentifier():
        raise ValueError(f"realization {kind.name!r}: a name is a lower-case identifier")
    REALIZATIONS[kind.name] = kind
    return kind


def realization_kind(name: str) -> RealizationKind:
    """The registered realization `name`; `ScheduleError("realization", ...)` if none is."""
    kind = REALIZATIONS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ScheduleError("realization", f"{name!r} is not one of {', '.join(REALIZATIONS)}")
    return kind


def realization_names(*, planned: bool | None = None) -> tuple[str, ...]:
    """The registered names in order; only the planned (or only the decided) ones if asked."""
    return tuple(n for n, k in REALIZATIONS.items() if planned is None or k.planned == planned)


def option_fields() -> dict[str, tuple[str, ...]]:
    """Each schedule field some realization takes as its own -> the realizations taking it."""
    out: dict[str, tuple[str, ...]] = {}
    for kind in REALIZATIONS.values():
        for name in kind.takes:
            out[name] = (*out.get(name, ()), kind.name)
    return out


# ---------------------------------------------------------------------------------------------
# The shared rule of the paper's realizations: the batch takes what a cap lets it of the decay


def floor_to_ghost(batch: float, ghost: int) -> int:
    """`batch` rounded down to a multiple of `ghost` (at least one ghost batch)."""
    # Rounding down keeps lr = lr0 * B / wanted at or below the recipe's lr, never above it.
    return max(ghost, math.floor(batch / ghost + 1e-9) * ghost)


def by_batch(curve: Curve, start: Start, cap: float) -> list[EpochValues]:
    """Every epoch with the batch realizing the decay up to `cap` and the lr the rest:

        wanted = B0 * decay(e)   (with `warmup="batch"`: B0 / mu(e), the ramp too)
        B      = wanted rounded down to a multiple of ghost, at most `cap`, never below B0
        lr     = lr0 * warmup_factor(e) * B / wanted

    so lr / B is the lr realization's at every epoch (`harness.core.schedule.realize`)."""
    b0, lr0 = start.batch_size, start.lr
    out: list[EpochValues] = []
    for epoch in range(curve.epochs):
        if start.warmup == "lr":
            ramp, divisor = curve.warmup_factor(epoch), curve.decay(epoch)
        else:
            ramp, divisor = 1.0, curve.divisor(epoch)
        wanted = b0 * divisor
        batch = b0 if wanted <= b0 else floor_to_ghost(min(wanted, cap), start.ghost)
        # Written as lr * (B / wanted) so that an exact batch step leaves lr bit-for-bit equal.
        lr = lr0 * ramp / divisor if batch == b0 else lr0 * ramp * (batch / wanted)
        out.append((lr, batch, start.momentum))
    return out


def _b_max(start: Start) -> float:
    return math.inf if start.b_max is None else float(start.b_max)


def _hybrid_cap(curve: Curve, start: Start) -> float:
    cap, drops = _b_max(start), start.options["batch_drops"]
    # Past ~1e300 the power overflows; such a batch is beyond any cap, so it changes nothing.
    if drops * math.log10(curve.factor) < 300:
        cap = min(cap, float(floor_to_ghost(start.batch_size * curve.factor**drops, start.ghost)))
    return cap


def _check_hybrid(start: Start) -> None:
    drops = start.options.get("batch_drops")
    if isinstance(drops, bool) or not isinstance(drops, int) or not 0 <= drops <= MAX_EPOCHS:
        raise ScheduleError("batch_drops", f"{drops!r} must be a whole number of drops, 0 or more")


def _drops(options: Mapping[str, Any]) -> str:
    k = options["batch_drops"]
    return f"hybrid ({k} batch drop{'s' if k != 1 else ''})"


register(
    RealizationKind(
        name="lr",
        summary="each drop divides the lr; B stays",
        title="decaying lr",
        suite_name="decaying_lr",
        epochs=lambda curve, start: by_batch(curve, start, float(start.batch_size)),
    )
)
register(
    RealizationKind(
        name="hybrid",
        summary="the first batch_drops drops by B, the rest by the lr",
        title="hybrid",
        suite_name="hybrid",
        epochs=lambda curve, start: by_batch(curve, start, _hybrid_cap(curve, start)),
        takes=("batch_drops",),
        requires={"batch_drops": "hybrid needs batch_drops: the drops made by the batch"},
        step_shape=True,
        check=_check_hybrid,
        label=_drops,
    )
)
register(
    RealizationKind(
        name="batch",
        summary="each drop multiplies B (capped at b_max; the lr takes the rest)",
        title="increasing batch",
        suite_name="increasing_batch",
        epochs=lambda curve, start: by_batch(curve, start, _b_max(start)),
    )
)
register(
    RealizationKind(
        name="adaptive",
        summary="B follows target x the measured B_simple, decided while training "
        "(harness.core.adaptive)",
        title="adaptive batch",
        suite_name="adaptive",
        takes=("target", "every", "grow_only"),
        requires={"b_max": "adaptive needs b_max: the largest batch it may choose (e.g. N/10)"},
    )
)
register(
    RealizationKind(
        name="tempered",
        summary="g follows the schedule; B follows the smoothed B_simple, the lr keeps g "
        "(harness.core.tempered)",
        title="tempered batch",
        suite_name="tempered",
        takes=("target", "every", "window", "max_step", "hysteresis", "lr_max"),
        requires={
            "b_max": "tempered needs b_max: the largest batch it may choose (e.g. N/10)",
            "lr_max": "tempered needs lr_max: the largest lr the recipe trains at (e.g. read "
            "from a noise sweep); its batch gives way where g would need more",
        },
    )
)
