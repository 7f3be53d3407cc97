"""The tempered realization: the schedule owns the temperature, the meter only how it is made.

Beyond the paper, and a second answer to the question `harness.core.adaptive` asked. There,
B followed target × B_simple at a fixed lr, so every increase of B *was* annealing: g fell 31×
within five epochs and the cells ended underfit (results/adaptive-cpu/README.md). Here the
base schedule fixes the noise scale of every epoch, exactly as for the paper's three
realizations, and the measured gradient noise scale only chooses which (lr, B) pair makes it:

- **g follows the schedule.** With the initial (lr0, B0), the schedule's decay d(e) and its
  warm-up w(e), every epoch trains at lr(e) = lr0 · w(e) · B(e) / (B0 · d(e)): lr / B is the
  decaying-lr realization's, so g = lr N / (B (1 - m)) is the paper's up to its (1 - B/N)
  factor, whatever B the meter chose (the paper's relation B ∝ lr at a fixed g, Sec 3).
- **B follows a smoothed B_simple.** At the decision epochs (`every`, 2·`every`, ...; 0-based,
  before the epoch trains) B becomes target × B_simple pooled over the last `window` epochs
  (`pooled_b_simple`: a ratio of means, steadier than one epoch's reading), moved by at most
  a factor `max_step` from the batch before, in whole ghost batches, within [2 ghost batches
  (the meter needs two), b_max].
- **Hysteresis.** A change smaller than `hysteresis` (relative) is not made: AdaptDL changed
  its batch only for a predicted gain of 5 % or more, after its users saw it move every epoch.
- **The lr is capped at `lr_max`** (the largest lr the recipe trains at, stated by the suite,
  e.g. read from a noise sweep): where the chosen B would need a larger lr to keep g, B takes
  the largest whole ghost batch whose lr stays within it, so the temperature is kept and the
  cap holds until the next decision (d never falls, so lr / B only falls).
- **Appendix A's allowance.** After B changes, momentum needs N_lost = B / (1 - m) examples
  to reach the new noise scale; B is kept small enough that they fit between two decisions,
  B <= (1 - m) · every · N (with m = 0.9, one decision an epoch: the paper's B_max ~ N/10).

What it does not do: an lr warm-up after a jump (a plan's lr is per epoch here; a ramp inside
an epoch would need the per-step lr the plan does not carry), and AdaScale's gain as the clock
of the schedule. Decisions are data, checked on resume and by tier 0 of the gate, as
`harness.core.decided` says for every decided realization.
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

# A finite B_simple larger than any batch and one smaller than any: what `bounds` decides on.
_HUGE, _TINY = 1e300, 1e-300
MAX_STEP = 1e3  # a decision may multiply or divide B by at most this (a larger value: a typo)


@dataclass(frozen=True)
class TemperedSchedule:
    """A base schedule whose noise scale is kept while the measured B_simple chooses B.

    `lr`, `batch_size` and `momentum` are the initial values (lr at most `lr_max`); `b_max`
    and `lr_max` are required. `ScheduleError` names the field of a broken rule.
    """

    base: BaseSchedule
    lr: float
    batch_size: int
    momentum: float
    train_size: int
    b_max: int
    lr_max: float
    target: float = 1.0
    every: int = 1
    window: int = 2
    max_step: float = 2.0
    hysteresis: float = 0.05
    ghost: int = 1
    drop_last: bool = True

    @classmethod
    def from_start(
        cls, base: BaseSchedule, start: Start, train_size: int, drop_last: bool
    ) -> TemperedSchedule:
        """The rule a suite's request gives (its own fields in `start.options`, None where the
        suite left one to its default)."""
        given = {k: v for k, v in start.options.items() if v is not None}
        assert start.b_max is not None and "lr_max" in given  # required by its descriptor
        return cls(
            base,
            lr=start.lr,
            batch_size=start.batch_size,
            momentum=start.momentum,
            train_size=train_size,
            b_max=start.b_max,
            ghost=start.ghost,
            drop_last=drop_last,
            **given,
        )

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
        if not (math.isfinite(self.lr_max) and self.lr_max >= self.lr):
            raise ScheduleError(
                "lr_max", f"{self.lr_max!r}: at least the initial lr ({self.lr:g}), and finite"
            )
        if not (math.isfinite(self.target) and 0 < self.target <= 1e6):
            raise ScheduleError("target", f"{self.target!r} must be a number in (0, 1e6]")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ScheduleError("window", f"{self.window!r} must be a whole number of epochs, 1+")
        if not (math.isfinite(self.max_step) and 1 < self.max_step <= MAX_STEP):
            raise ScheduleError("max_step", f"{self.max_step!r} must be in (1, {MAX_STEP:g}]")
        if not (math.isfinite(self.hysteresis) and 0 <= self.hysteresis < 1):
            raise ScheduleError("hysteresis", f"{self.hysteresis!r} must be in [0, 1)")
        if self.b_max < 2 * self.ghost:
            raise ScheduleError(
                "b_max",
                f"{self.b_max}: the meter needs two ghost batches a step (B >= {2 * self.ghost})",
            )

    # --- The protocol of harness.core.decided ---------------------------------------------

    def options(self) -> Mapping[str, Any]:
        return {
            "target": self.target,
            "every": self.every,
            "window": self.window,
            "max_step": self.max_step,
            "hysteresis": self.hysteresis,
            "lr_max": self.lr_max,
        }

    def caption(self) -> str:
        """The rule, and the updates between its two bounds, in one sentence."""
        most, fewest = self.bounds()
        every = "every epoch" if self.every == 1 else f"every {self.every} epochs"
        return (
            f"tempered: g follows the schedule; B = {self.target:g} x B_simple pooled over "
            f"{self.window} epochs, decided {every} from epoch {self.every}, at most x"
            f"{self.max_step:g} per decision, kept if it would move less than "
            f"{self.hysteresis:.0%}, a multiple of {self.ghost} from {2 * self.ghost} up to "
            f"b_max {self.b_max}; lr = the schedule's lr/B times B, at most lr_max "
            f"{self.lr_max:g}. Between {fewest.updates} updates (B grows at every decision) "
            f"and {most.updates} (B shrinks at every decision)"
        )

    def decision_epochs(self) -> range:
        return range(self.every, self.base.epochs, self.every)

    def pooled_from(self, epoch: int, decisions: Sequence[Decision]) -> int:
        """The first epoch (0-based) whose readings the decision at `epoch` pools."""
        return max(0, epoch - self.window)

    def lr_ratio(self, epoch: int) -> float:
        """lr / B at `epoch` (without the warm-up): the decaying-lr realization's."""
        return self.lr / (self.batch_size * self.base.decay(epoch))

    def decide(self, epoch: int, b_simple: float, previous: int) -> Decision:
        return Decision(epoch, b_simple, self._choose(epoch, b_simple, previous))

    def _choose(self, epoch: int, b_simple: float, previous: int) -> int:
        if not (math.isfinite(b_simple) and b_simple > 0):
            return previous
        wanted = self.target * b_simple
        wanted = min(max(wanted, previous / self.max_step), previous * self.max_step)
        if abs(wanted / previous - 1) < self.hysteresis:
            return previous
        ceiling = self.ceiling(epoch)
        batch = math.floor(min(wanted, float(ceiling)) / self.ghost + 0.5) * self.ghost
        return max(2 * self.ghost, min(batch, ceiling))

    def ceiling(self, epoch: int) -> int:
        """The largest batch a decision at `epoch` may choose, a whole number of ghost batches
        (at least two): b_max; the largest whose lr keeps g within `lr_max` (lr / B only falls
        later, so the cap holds until the next decision); and Appendix A's allowance, the
        largest whose N_lost = B / (1 - m) examples fit in the `every` epochs before the next
        decision, B <= (1 - m) · every · N (with m = 0.9 and every epoch: the paper's N/10)."""
        lr_cap = self.lr_max / self.lr_ratio(epoch)
        allowance = (1 - self.momentum) * self.every * self.train_size
        most = min(float(self.b_max), lr_cap, allowance)
        return max(2 * self.ghost, math.floor(most / self.ghost) * self.ghost)

    def check(self, decisions: Sequence[Decision]) -> None:
        allowed = set(self.decision_epochs())
        last = 0
        for d in decisions:
            if d.epoch not in allowed or d.epoch <= last:
                raise ScheduleError(
                    "decisions", f"a decision at epoch {d.epoch!r}, not a decision epoch in order"
                )
            ceiling = self.ceiling(d.epoch)
            if (
                not isinstance(d.batch_size, int)
                or d.batch_size % self.ghost
                or not 2 * self.ghost <= d.batch_size <= max(ceiling, self.batch_size)
            ):
                raise ScheduleError(
                    "decisions",
                    f"batch {d.batch_size!r} at epoch {d.epoch}: outside [{2 * self.ghost}, "
                    f"{ceiling}] or not a multiple of {self.ghost}",
                )
            last = d.epoch

    def check_rule(self, decisions: Sequence[Decision]) -> None:
        previous = self.batch_size
        for d in decisions:
            want = self._choose(d.epoch, d.b_simple, previous)
            if d.batch_size != want:
                raise ScheduleError(
                    "decisions",
                    f"batch {d.batch_size!r} at epoch {d.epoch}, where the rule gives {want} "
                    f"for its recorded B_simple {d.b_simple:.6g} after batch {previous}",
                )
            previous = d.batch_size

    def batches(self, decisions: Sequence[Decision] = ()) -> list[int]:
        """B of every epoch under `decisions` (kept until the next one)."""
        self.check(decisions)
        return batches_after(self.batch_size, self.base.epochs, decisions)

    def plan(self, decisions: Sequence[Decision] = ()) -> Plan:
        base, epochs = self.base, []
        for epoch, batch in enumerate(self.batches(decisions)):
            lr = base.warmup_factor(epoch) * self.lr_ratio(epoch) * batch
            epochs.append((lr, batch, self.momentum))
        phases = merge_epochs(epochs, self.train_size, self.drop_last)
        return Plan(phases, self.train_size, self.drop_last)

    def bounds(self) -> tuple[Plan, Plan]:
        """(B shrinking at every decision: the most updates, B growing at every decision: the
        fewest), each as the rule itself decides for a vanishing and a huge B_simple."""
        return self._extreme(_TINY), self._extreme(_HUGE)

    def _extreme(self, b_simple: float) -> Plan:
        decisions: list[Decision] = []
        previous = self.batch_size
        for epoch in self.decision_epochs():
            decision = self.decide(epoch, b_simple, previous)
            decisions.append(decision)
            previous = decision.batch_size
        return self.plan(decisions)
