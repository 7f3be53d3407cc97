"""The adaptive realization: a batch size that follows the measured gradient noise scale.

Beyond the paper. Its schedules fix every batch in advance; AdaptDL / Pollux (Qiao et al.,
OSDI 2021) choose the batch from the gradient noise scale B_simple (McCandlish et al. 2018,
measured by harness.train.noise) as training goes. Here the same idea is a fourth
realization of a base schedule, so its accuracy and update count sit beside the paper's three
in one suite:

- Decision epochs are `every`, 2·`every`, ... (0-based, before the epoch trains; never epoch
  0, which has nothing measured yet). At each, B becomes `target` × B_simple, B_simple read
  from the epochs since the previous decision (`pooled_b_simple`: the ratio of their mean
  tr(Σ) to their mean |G|², as the meter pools within an epoch), rounded to the nearest whole
  number of ghost batches and clamped to [B_prev, b_max] (`grow_only`, the default) or to
  [B0, b_max]. Nothing measured (NaN): B stays. `choose_batch` is the rule.
- The lr stays at its initial value (times the warm-up ramp, as in every realization) until
  B first reaches b_max, at epoch e*; from then on the lr makes what remains of the base
  schedule's drops, as the batch realization's lr does past its cap: with the schedule's
  batch wanted(e) = B0 · decay(e), lr(e) = lr0 · B(e) / wanted(e) where B(e) < wanted(e),
  else lr0. So once capped the cell anneals to the schedule's temperature lr/B (and its
  final noise scale is the batch realization's at the same b_max); before, g falls only as
  fast as the batch grows, which may be faster or slower than the schedule.

The rule is a `harness.core.decided.DecidedSchedule`, built from a suite's request by
`from_start` (registered as `adaptive` in `harness.core.schedule_request.DECIDED`).
Decisions are data (`Decision`): the training loop records them in the checkpoint and in the
curve rows, and `AdaptiveSchedule.plan(decisions)` is the plan they give, a pure function,
so a resumed or paused cell continues with the same batches and tier 0 of the gate checks
the applied batches against the recorded decisions. Before training, only bounds are known
(`AdaptiveSchedule.bounds`): the plan if B never grows (the most updates) and if it jumps to
b_max at the first decision (the fewest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.core.decided import Decision, batches_after, check_start
from harness.core.realizations import Start
from harness.core.rules import ScheduleError
from harness.core.schedule import BaseSchedule, Plan, merge_epochs

MAX_TARGET = 1e6  # target x B_simple is a batch size: a larger factor is a typo


def choose_batch(
    b_simple: float,
    previous: int,
    *,
    initial: int,
    target: float,
    b_max: int,
    ghost: int,
    grow_only: bool = True,
) -> int:
    """The decision rule: `target` × `b_simple` rounded to the nearest multiple of `ghost`
    (at least one ghost batch), clamped to [`previous`, `b_max`] when `grow_only`, else to
    [`initial`, `b_max`]; `previous` when `b_simple` is NaN, infinite or not positive."""
    if not (math.isfinite(b_simple) and b_simple > 0):
        return previous
    wanted = min(target * b_simple, float(b_max))  # min first: no int() of a huge float
    batch = max(ghost, math.floor(wanted / ghost + 0.5) * ghost)
    low = previous if grow_only else initial
    return max(low, min(batch, b_max))


@dataclass(frozen=True)
class AdaptiveSchedule:
    """A base schedule realized by a batch that follows the measured B_simple.

    `batch_size`, `lr` and `momentum` are the initial values; `b_max` is required (the batch
    must stop somewhere: hardware, or the paper's B ~ N/10). `ScheduleError` names the field
    of a broken rule, as `realize` does.
    """

    base: BaseSchedule
    lr: float
    batch_size: int
    momentum: float
    train_size: int
    b_max: int
    target: float = 1.0
    every: int = 1
    grow_only: bool = True
    ghost: int = 1
    drop_last: bool = True

    def __post_init__(self) -> None:
        check_start(
            self.base,
            lr=self.lr,
            batch_size=self.batch_size,
            momentum=self.momentum,
            train_size=self.train_size,
            b_max=self.b_max,
            ghost=self.ghost,
            every=self.every,
        )
        if not (math.isfinite(self.target) and 0 < self.target <= MAX_TARGET):
            raise ScheduleError(
                "target", f"{self.target!r} must be a number in (0, {MAX_TARGET:g}]"
            )

    @classmethod
    def from_start(
        cls, base: BaseSchedule, start: Start, train_size: int, drop_last: bool
    ) -> AdaptiveSchedule:
        """The rule a suite's request gives (its own fields in `start.options`, each None
        where the suite left it to its default)."""
        options = start.options
        assert start.b_max is not None  # required by its descriptor
        return cls(
            base,
            lr=start.lr,
            batch_size=start.batch_size,
            momentum=start.momentum,
            train_size=train_size,
            b_max=start.b_max,
            target=1.0 if options.get("target") is None else options["target"],
            every=1 if options.get("every") is None else options["every"],
            grow_only=True if options.get("grow_only") is None else options["grow_only"],
            ghost=start.ghost,
            drop_last=drop_last,
        )

    def options(self) -> Mapping[str, Any]:
        """Its fields in a cell's configuration (and id), in the order they have always had."""
        return {"target": self.target, "every": self.every, "grow_only": self.grow_only}

    def caption(self) -> str:
        """The rule, and the updates between its two bounds, in one sentence."""
        most, fewest = self.bounds()
        every = "every epoch" if self.every == 1 else f"every {self.every} epochs"
        clamp = "never falling" if self.grow_only else f"never below {self.batch_size}"
        return (
            f"adaptive: B = {self.target:g} x the measured B_simple, decided {every} from epoch "
            f"{self.every}, a multiple of {self.ghost} up to b_max {self.b_max}, {clamp}; once "
            "B reaches b_max the lr makes what the batch leaves of the schedule's drops. "
            f"Between {fewest.updates} updates (B jumps to b_max at the first decision) and "
            f"{most.updates} (B never grows, the phases shown)"
        )

    def decision_epochs(self) -> range:
        """The epochs (0-based) that start with a decision."""
        return range(self.every, self.base.epochs, self.every)

    def pooled_from(self, epoch: int, decisions: Sequence[Decision]) -> int:
        """The epochs since the previous decision (from the start before the first)."""
        return decisions[-1].epoch if decisions else 0

    def decide(self, epoch: int, b_simple: float, previous: int) -> Decision:
        """The decision at the start of `epoch`, from the B_simple measured since the last."""
        batch = choose_batch(
            b_simple,
            previous,
            initial=self.batch_size,
            target=self.target,
            b_max=self.b_max,
            ghost=self.ghost,
            grow_only=self.grow_only,
        )
        return Decision(epoch, b_simple, batch)

    def batches(self, decisions: Sequence[Decision] = ()) -> list[int]:
        """B of every epoch under `decisions` (B stays as decided until the next one);
        `ScheduleError("decisions", ...)` for decisions this schedule cannot have made."""
        self.check(decisions)
        return batches_after(self.batch_size, self.base.epochs, decisions)

    def check(self, decisions: Sequence[Decision]) -> None:
        """`ScheduleError("decisions", ...)` unless each decision is at a decision epoch, in
        order, once, and its batch obeys the rule's bounds."""
        allowed = set(self.decision_epochs())
        previous, last = self.batch_size, 0
        for d in decisions:
            low = previous if self.grow_only else self.batch_size
            if d.epoch not in allowed or d.epoch <= last:
                raise ScheduleError(
                    "decisions", f"a decision at epoch {d.epoch!r}, not a decision epoch in order"
                )
            if (
                not isinstance(d.batch_size, int)
                or d.batch_size % self.ghost
                or not low <= d.batch_size <= self.b_max
            ):
                raise ScheduleError(
                    "decisions",
                    f"batch {d.batch_size!r} at epoch {d.epoch}: outside [{low}, {self.b_max}] "
                    f"or not a multiple of {self.ghost}",
                )
            previous, last = d.batch_size, d.epoch

    def check_rule(self, decisions: Sequence[Decision]) -> None:
        """`ScheduleError("decisions", ...)` unless each decision's batch is the one this rule
        gives for the decision's own recorded B_simple after the batch before it: the rule
        re-derived, exactly (a float B_simple gives one batch wherever it is re-derived)."""
        previous = self.batch_size
        for d in decisions:
            want = self.decide(d.epoch, d.b_simple, previous).batch_size
            if d.batch_size != want:
                raise ScheduleError(
                    "decisions",
                    f"batch {d.batch_size!r} at epoch {d.epoch}, where the rule gives {want} "
                    f"for its recorded B_simple {d.b_simple:.6g} after batch {previous}",
                )
            previous = d.batch_size

    def plan(self, decisions: Sequence[Decision] = ()) -> Plan:
        """The plan `decisions` give (the batch after the last one kept to the end)."""
        base, epochs = self.base, []
        capped_at: int | None = None  # e*: the first epoch trained at b_max
        for epoch, batch in enumerate(self.batches(decisions)):
            if capped_at is None and batch == self.b_max:
                capped_at = epoch
            lr = self.lr * base.warmup_factor(epoch)
            wanted = self.batch_size * base.decay(epoch)  # the batch realization's B
            if capped_at is not None and batch < wanted:
                lr *= batch / wanted
            epochs.append((lr, batch, self.momentum))
        phases = merge_epochs(epochs, self.train_size, self.drop_last)
        return Plan(phases, self.train_size, self.drop_last)

    def bounds(self) -> tuple[Plan, Plan]:
        """(the plan if B never grows, the plan if it jumps to b_max at the first decision):
        the most and the fewest updates an adaptive cell can take."""
        first = self.decision_epochs()[0]
        return self.plan(), self.plan([Decision(first, math.nan, self.b_max)])
