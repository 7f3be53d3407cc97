"""The per-cell metric registry (harness.core.metrics): every entry complete, and every reader
(the run row, the gate's tolerances and its error, the store's check) in step with it."""

from __future__ import annotations

import dataclasses
import math
import typing

import pandas as pd
import pytest

from harness.analysis.gate import compare
from harness.config.schema import CheckSpec
from harness.core.epoch_record import EpochRecord
from harness.core.metrics import CELL_METRICS, cell_metrics
from harness.errors import UserError
from harness.results.record import RunRecord


def _epoch(epoch: int, acc: float, loss: float) -> EpochRecord:
    return EpochRecord(
        cell_id="c", epoch=epoch, updates=10 * epoch, lr=0.1, batch_size=32, momentum=0.9,
        noise_scale=1.0, train_loss=loss, test_loss=loss + 0.1, test_acc=acc,
        epoch_time_s=1.0, eval_time_s=0.1, images_per_s=100.0,
    )  # fmt: skip


CURVES = [_epoch(1, 0.4, 2.0), _epoch(2, 0.7, 1.0), _epoch(3, math.nan, 0.8), _epoch(4, 0.6, 0.5)]


@pytest.mark.parametrize("name", list(CELL_METRICS))
def test_every_metric_is_complete(name: str) -> None:
    """A float column of the run row, a tolerance of the gate, words, NaN for a cell that
    trained nothing, a finite number (a fraction where it says so) for one that did."""
    metric = CELL_METRICS[name]
    hints = typing.get_type_hints(RunRecord)
    assert hints.get(name) is float, f"{name}: no float field of RunRecord (results/record.py)"
    assert name in CheckSpec.model_fields, f"{name}: no tolerance in config/schema.py CheckSpec"
    assert metric.about
    assert math.isnan(metric.of([]))
    value = metric.of(CURVES)
    assert math.isfinite(value)
    if metric.fraction:
        assert 0.0 <= value <= 1.0


def test_the_gate_tolerates_exactly_the_metrics() -> None:
    tolerances = set(CheckSpec.model_fields) - {"seeds"}
    assert tolerances == set(CELL_METRICS)
    assert {f.name for f in dataclasses.fields(RunRecord)} >= set(CELL_METRICS)


def test_the_metrics_of_a_cell() -> None:
    """Evaluated epochs only for the test metrics; the last epoch's loss for training."""
    assert cell_metrics(CURVES) == {
        "final_test_acc": 0.6,
        "best_test_acc": 0.7,
        "final_test_loss": 0.6,
        "final_train_loss": 0.5,
    }


def test_a_tolerance_of_no_metric_names_every_metric() -> None:
    runs = pd.DataFrame({"cell_id": ["c"], "final_test_acc": [0.5]})
    with pytest.raises(UserError, match=", ".join(CELL_METRICS)):
        compare(runs, runs, {"bogus": 0.1})
