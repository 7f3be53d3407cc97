"""The epoch record: training fills it, the results layer stores it, one declaration per column."""

from __future__ import annotations

import dataclasses

from harness.core.epoch_record import Applied, Decided, EpochRecord, NoiseReading
from harness.results.record import AUDIT_COLUMNS, CURVE_COLUMNS, CurveRecord

LOOP = dict(
    cell_id="abc",
    epoch=2,
    updates=8,
    lr=0.1,
    batch_size=32,
    momentum=0.9,
    noise_scale=12.5,
    train_loss=1.5,
    test_loss=1.25,
    test_acc=0.5,
    epoch_time_s=3.0,
    eval_time_s=0.5,
    images_per_s=100.0,
)
APPLIED = Applied(0.1, 0.9, False, 5e-4, 32, 16, 16, 11, 22, 33)
NOISE = NoiseReading(40.0, 2.0, 0.05, 16)
DECIDED = Decided(41.5, 48)


def test_the_curves_columns_are_the_suite_then_the_epoch_record_in_order():
    record = EpochRecord(**LOOP, applied=APPLIED, train_eval_loss=1.0, noise=NOISE)
    columns = record.columns()
    assert list(CURVE_COLUMNS) == ["schema_version", "suite", *columns]
    assert list(columns)[13:23] == list(AUDIT_COLUMNS)  # the audit's part in its place
    assert list(columns)[23:25] == ["train_eval_loss", "train_eval_images"]
    assert list(columns)[25:29] == [f.name for f in dataclasses.fields(NoiseReading)]
    assert list(columns)[29:] == ["decision_b_simple", "decision_batch_size"]  # adaptive
    row = CurveRecord("smoke", record).as_row()
    assert row["suite"] == "smoke" and row["noise_small_batch"] == 16 and row["ghost_size"] == 16


def test_a_record_reads_back_from_its_columns_and_an_old_row_has_no_parts():
    whole = EpochRecord(**LOOP, applied=APPLIED, train_eval_loss=1.0, noise=NOISE, decided=DECIDED)
    assert EpochRecord.from_columns(whole.columns()) == whole
    plain = EpochRecord(**LOOP)
    assert all(plain.columns()[name] is None for name in AUDIT_COLUMNS)
    assert EpochRecord.from_columns(plain.columns()) == plain
    # A checkpoint row written before the audit and the meter existed: only the loop's keys.
    old = EpochRecord.from_columns(LOOP)
    assert old.applied is None and old.noise is None and old.train_eval_loss is None
    assert old.decided is None
