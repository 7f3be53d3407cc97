"""Realizations decided while training: each one's decision hook, registered by name.

A planned realization (`harness.core.realizations`, `epochs` given) needs nothing here: the
loop follows its plan. One decided while training (`epochs` None) registers a
`DecisionHook` under its name in `DECISION_HOOKS`; `harness.train.loop` asks the job's hook
(`decision_hook`) at the start of each epoch for a decision, and on resume whether a
checkpoint's decisions are the rule's. `tests/test_realizations.py` checks that every decided
realization has one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from harness.core.decided import Decision, pooled_b_simple
from harness.core.epoch_record import EpochRecord
from harness.train.checkpoint import Progress
from harness.train.spec import TrainJob

# Makes every process of a data-parallel job read one value (rank 0's); the identity alone.
Agree = Callable[[float], float]


class DecisionHook(Protocol):
    """What the loop asks of a realization decided while training."""

    # The meter of the gradient noise scale is on for its cells (steps split in two).
    needs_noise_scale: ClassVar[bool]

    def check(self, job: TrainJob, progress: Progress) -> None:
        """ValueError, saying why, unless `progress` (a checkpoint's) holds exactly the
        decisions the rule makes for what its curves measured."""

    def decide(
        self, job: TrainJob, progress: Progress, epoch: int, previous: int, agree: Agree
    ) -> Decision | None:
        """The decision at the start of 0-based `epoch` (the batch was `previous`), or None
        where none is due; `agree` makes every process of a data-parallel job read one value
        (rank 0's)."""


class FromBSimple:
    """A rule that decides from the measured B_simple at its decision epochs: `adaptive`
    (harness.core.adaptive: target x the B_simple since the last decision) and `tempered`
    (harness.core.tempered: B_simple pooled over a window, g kept by the lr). Which epochs
    each decision pools is the rule's (`pooled_from`)."""

    needs_noise_scale: ClassVar[bool] = True

    def check(self, job: TrainJob, progress: Progress) -> None:
        rule = job.decided
        assert rule is not None  # a decided job carries its rule (app.jobs.train_job)
        started = progress.epoch + (progress.partial is not None)
        want = [e for e in rule.decision_epochs() if e < started]
        made = [d.epoch for d in progress.decisions]
        if made != want:
            raise ValueError(f"decisions at epochs {made}, where {started} epochs call for {want}")
        # Each decision is the rule's for the B_simple the curves before it measured: an
        # edited batch or B_simple would train a plan the rule never chose.
        for i, d in enumerate(progress.decisions):
            since = rule.pooled_from(d.epoch, progress.decisions[:i])
            measured = b_simple_since(progress.curves, since, d.epoch)
            if not _same_float(d.b_simple, measured):
                raise ValueError(
                    f"the decision at epoch {d.epoch} records B_simple {d.b_simple!r}, where "
                    f"the curves before it measured {measured!r}"
                )
        rule.check_rule(progress.decisions)

    def decide(
        self, job: TrainJob, progress: Progress, epoch: int, previous: int, agree: Agree
    ) -> Decision | None:
        # Under data parallelism every process pooled the same readings (NoiseMeter); rank 0's
        # B_simple is broadcast all the same, so no float summation order can split a decision.
        rule = job.decided
        assert rule is not None
        if epoch not in rule.decision_epochs() or any(d.epoch == epoch for d in progress.decisions):
            return None
        since = rule.pooled_from(epoch, progress.decisions)
        b_simple = agree(b_simple_since(progress.curves, since, epoch))
        return rule.decide(epoch, b_simple, previous)


DECISION_HOOKS: dict[str, DecisionHook] = {"adaptive": FromBSimple(), "tempered": FromBSimple()}


def decision_hook(job: TrainJob) -> DecisionHook | None:
    """The hook of the job's realization; None for a planned one."""
    return DECISION_HOOKS.get(job.realization)


def b_simple_since(curves: Sequence[EpochRecord], since: int, until: int) -> float:
    """B_simple pooled from the noise readings of epochs (since, until] (1-based epochs, as
    the curve rows count them): what a decision at 0-based epoch `until` reads."""
    readings = [
        (r.noise.noise_trace, r.noise.noise_grad_sq)
        for r in curves
        if since < r.epoch <= until and r.noise is not None
    ]
    return pooled_b_simple(readings)


def _same_float(a: object, b: float) -> bool:
    if not isinstance(a, float | int) or isinstance(a, bool):
        return False
    return (math.isnan(a) and math.isnan(b)) or a == b
