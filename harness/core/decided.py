"""What a realization decided while training is, to every layer: its rule, its decisions.

A planned realization (`harness.core.realizations`, `epochs` given) is its plan. One decided
while training (`epochs` None) is a `DecidedSchedule`: a rule that, at its decision epochs,
turns what training measured into a `Decision`, and whose plan is a pure function of the
decisions so far. Every layer reads a decided cell through this protocol only: the suite
resolves a request into one (`harness.core.schedule_request.DECIDED`, the builders by name),
`harness plan` shows its bounds and caption, training asks it to decide and records the
decisions (`harness.train.decisions`), a resumed cell and tier 0 of the gate check them
against it (`check`, `check_rule`, `plan`). `harness.core.adaptive` is the first; a new one
is a module with a class of this shape and its two registrations (docs/ARCHITECTURE.md, "How
to add a realization").

Below the schedule algebra's users, above `harness.core.schedule` (its plans are `Plan`s).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.core.rules import ScheduleError, check_realization
from harness.core.schedule import BaseSchedule, Plan


@dataclass(frozen=True)
class Decision:
    """One decision of a decided cell: from `epoch` (0-based) on, B = `batch_size`, chosen
    from `b_simple` (NaN where nothing was measured and B was kept)."""

    epoch: int
    b_simple: float
    batch_size: int


def pooled_b_simple(readings: Iterable[tuple[float, float]]) -> float:
    """B_simple of several epochs' (tr(Σ), |G|²) readings: the ratio of their means (each
    epoch's components are unbiased estimates, their ratio is not). Readings with a NaN are
    left out; NaN when none is left or the mean |G|² is not positive."""
    kept = [(t, g) for t, g in readings if math.isfinite(t) and math.isfinite(g)]
    if not kept:
        return math.nan
    trace = sum(t for t, _ in kept) / len(kept)
    grad_sq = sum(g for _, g in kept) / len(kept)
    return trace / grad_sq if grad_sq > 0 else math.nan


class DecidedSchedule(Protocol):
    """A realization's rule decided while training (harness.core.adaptive.AdaptiveSchedule is
    one). `ScheduleError("decisions", ...)` for decisions the rule cannot have made."""

    @property
    def batch_size(self) -> int:
        """B before any decision."""
        ...

    @property
    def b_max(self) -> int:
        """The largest batch it may choose."""
        ...

    def options(self) -> Mapping[str, Any]:
        """Its own fields and their values, as a cell's configuration (and so its id) holds
        them: the keys and value types of a rule already in use must stay as they are."""
        ...

    def caption(self) -> str:
        """The rule and the updates between its bounds in one sentence (`harness plan`)."""
        ...

    def decision_epochs(self) -> range:
        """The epochs (0-based) that start with a decision."""
        ...

    def pooled_from(self, epoch: int, decisions: Sequence[Decision]) -> int:
        """The first epoch (0-based) whose noise readings the decision at `epoch` pools (it
        pools every epoch from there to `epoch`), `decisions` being those made before it."""
        ...

    def decide(self, epoch: int, b_simple: float, previous: int) -> Decision:
        """The decision at the start of `epoch`, from the B_simple measured since the last
        decision, the batch having been `previous`."""
        ...

    def check(self, decisions: Sequence[Decision]) -> None:
        """Each decision at a decision epoch, in order, once, within the rule's bounds."""
        ...

    def check_rule(self, decisions: Sequence[Decision]) -> None:
        """Each decision's batch the one the rule gives for its own recorded B_simple."""
        ...

    def plan(self, decisions: Sequence[Decision] = ()) -> Plan:
        """The plan `decisions` give (the plan before any decision without them)."""
        ...

    def bounds(self) -> tuple[Plan, Plan]:
        """(the plan of the most updates, the plan of the fewest) a cell can take."""
        ...


def check_start(
    base: BaseSchedule,
    *,
    lr: float,
    batch_size: int,
    momentum: float,
    train_size: int,
    b_max: int,
    ghost: int,
    every: int,
) -> None:
    """The rules every rule deciding from the measured B_simple obeys: a realization's start
    (`check_realization`), b_max within the training set, a decision epoch before the last,
    and two ghost batches per step for the meter. `ScheduleError` names the field."""
    check_realization(
        base,
        lr=lr,
        batch_size=batch_size,
        momentum=momentum,
        train_size=train_size,
        b_max=b_max,
        ghost=ghost,
    )
    if b_max > train_size:
        raise ScheduleError("b_max", f"{b_max} exceeds the training set ({train_size} examples)")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ScheduleError("every", f"{every!r} must be a whole number of epochs, 1+")
    if every >= base.epochs:
        raise ScheduleError(
            "every", f"{every}: no decision before the last of {base.epochs} epochs; lower it"
        )
    if batch_size < 2 * ghost:
        raise ScheduleError(
            "batch_size",
            f"{batch_size}: the noise meter needs two ghost batches per step "
            f"(B >= {2 * ghost}) to measure B_simple",
        )


def batches_after(initial: int, epochs: int, decisions: Sequence[Decision]) -> list[int]:
    """B of every epoch: `initial` until the first decision, then each decision's batch
    until the next (the decisions already checked, in order)."""
    batches, batch, pending = [], initial, list(decisions)
    for epoch in range(epochs):
        if pending and pending[0].epoch == epoch:
            batch = pending.pop(0).batch_size
        batches.append(batch)
    return batches


def plan_after(plan: Plan, rule: DecidedSchedule | None, decisions: Sequence[Decision]) -> Plan:
    """The plan training follows: `plan`, or a decided `rule`'s plan after `decisions`."""
    return plan if rule is None else rule.plan(decisions)
