"""A cell's metrics: the numbers of its run row that its curves give, registered by name.

Each `CellMetric` is a pure function of the cell's epoch records (`harness.core.epoch_record`), so
training (`harness.train.loop.CellResult.final`), a failed cell's row (NaN), the run row
(`harness.app.jobs.run_record`), the store's check of a row (`fraction`), the gate's
per-cell tolerances (`harness.config.schema.CheckSpec`, one optional field per metric) and
its error naming them all read this one registry. A new per-cell metric is its entry here
and its field of `RunRecord` (`harness/results/record.py`, same name);
`tests/test_metrics.py` checks the two agree and every entry is complete.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.core.epoch_record import EpochRecord


@dataclass(frozen=True)
class CellMetric:
    """One number of a cell's run row, from its epoch records (NaN where they hold none)."""

    of: Callable[[Sequence[EpochRecord]], float]
    about: str  # what it is, one line
    fraction: bool = False  # an accuracy: a row outside 0..1 (NaN aside) is refused


def _evaluated(curves: Sequence[EpochRecord]) -> list[EpochRecord]:
    """The epochs that were evaluated (the others' test metrics are NaN)."""
    return [c for c in curves if not math.isnan(c.test_acc)]


def _final(curves: Sequence[EpochRecord], name: str) -> float:
    evaluated = _evaluated(curves)
    return float(getattr(evaluated[-1], name)) if evaluated else math.nan


CELL_METRICS: dict[str, CellMetric] = {
    "final_test_acc": CellMetric(
        lambda curves: _final(curves, "test_acc"),
        "test accuracy at the last evaluation",
        fraction=True,
    ),
    "best_test_acc": CellMetric(
        lambda curves: max((c.test_acc for c in _evaluated(curves)), default=math.nan),
        "the highest test accuracy of any evaluation",
        fraction=True,
    ),
    "final_test_loss": CellMetric(
        lambda curves: _final(curves, "test_loss"), "test loss at the last evaluation"
    ),
    "final_train_loss": CellMetric(
        lambda curves: curves[-1].train_loss if curves else math.nan,
        "mean training loss over the last epoch's steps",
    ),
}


def cell_metrics(curves: Sequence[EpochRecord]) -> dict[str, float]:
    """Every registered metric of a cell with these epoch records."""
    return {name: metric.of(curves) for name, metric in CELL_METRICS.items()}
