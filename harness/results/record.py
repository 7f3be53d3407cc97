"""The one record type of a results folder: a `RunRecord` per cell, curve rows per epoch.

The runner builds a `RunRecord`; the store writes and reads it; report and check read the
frames whose columns are its fields. The Parquet schemas are derived from the dataclasses
here and, for the curves, from `harness.core.epoch_record.EpochRecord` (what training fills), so a
column is declared in exactly one place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from harness.core.epoch_record import Applied, EpochRecord, flat_columns, flat_fields

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed) cell. Accuracies are fractions in [0, 1], times in seconds."""

    suite: str
    experiment: str
    aliases: list[str]  # other experiment/optimizer/schedule/seedN labels of this cell
    cell_id: str
    model: str
    dataset: str
    data_source: str | None  # official | jpeg-derived | unverified | synthetic
    train_size: int
    optimizer: str  # the suite's name for the optimizer recipe
    optimizer_kind: str  # sgd | momentum | nesterov | adam | adamw
    schedule: str  # the suite's name for the schedule
    realization: str  # a name of harness.core.realizations.REALIZATIONS
    milestones: list[int]
    seed: int
    status: str  # ok | diverged | failed
    error: str | None
    epochs: int  # epochs trained
    planned_epochs: int
    updates: int  # optimizer steps taken
    planned_updates: int
    final_test_acc: float
    best_test_acc: float
    final_test_loss: float
    final_train_loss: float  # mean over the last epoch's steps
    wall_clock_s: float  # whole cell, resumed segments added up
    train_time_s: float
    eval_time_s: float
    overhead_time_s: float  # wall clock less train, eval and warm-up
    warmup_time_s: float  # untimed warm-up / compile, outside train_time_s
    images_per_s: float  # training images over train_time_s
    updates_per_s: float
    peak_memory_bytes: int  # device memory; host max RSS on the CPU
    device: str  # cpu | cuda
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3", or the CPU model
    precision: str
    world_size: int | None  # processes of a data-parallel (torchrun) job; 1 otherwise
    devices: str | None  # every process's device, e.g. "cuda:0,cuda:1"
    hostname: str
    python_version: str
    torch_version: str
    harness_version: str
    git_commit: str
    git_dirty: bool | None
    config: str  # the resolved cell configuration, JSON
    plan: str  # the planned phases, JSON
    paper_test_acc: float | None
    paper_updates: str | None  # the paper's own words, e.g. "under 6500"
    paper_source: str | None
    started_at: dt.datetime
    finished_at: dt.datetime
    # A batch-size sweep's target (the suite's experiments[].sweep; harness.analysis.sweep):
    # the curve metric and the value whose crossing counts as reached. None outside sweeps.
    sweep_metric: str | None = None
    sweep_target: float | None = None
    # The suite's report.equivalence_margin (harness.analysis.seeds, TOST): an analysis
    # setting, outside the cell id; null where the suite states none.
    equivalence_margin: float | None = None
    # A model from the user's code (the suite's `factory:`): the file that defines it and,
    # where that is in a git checkout, its commit and whether the file differs from it.
    # Null for the registered models.
    model_source: str | None = None
    model_commit: str | None = None
    model_dirty: bool | None = None
    # The host allocator the cell trained under (harness.allocator): "glibc tuned", "glibc
    # default" (HARNESS_MALLOC=system), "default" (not glibc); null in older rows. It moves the
    # timings, never a number.
    allocator: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CurveRecord:
    """One epoch of one cell: the suite's name and the epoch as training recorded it.

    Its columns are `suite`, then the fields of `harness.core.epoch_record.EpochRecord` in order
    (the audit's `Applied` and the meter's `NoiseReading` in their places, null where absent):
    each curve column is declared there, once."""

    suite: str
    measured: EpochRecord

    def as_row(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **flat_columns(self)}


# The tier-0 columns of CurveRecord: a baseline whose curves lack them predates the gate.
AUDIT_COLUMNS = tuple(f.name for f in dataclasses.fields(Applied))


_ARROW: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> pa.DataType:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return pa.list_(_arrow_type(args[0]))
    if args:  # X | None
        return _arrow_type(args[0])
    return _ARROW[annotation]


def arrow_schema(record: type) -> pa.Schema:
    """The Parquet schema of a record dataclass: schema_version, then its columns in order
    (a nested record's, such as `EpochRecord`'s, in its place: `flat_fields`)."""
    fields = [pa.field("schema_version", pa.int32())]
    fields += [pa.field(name, _arrow_type(hint)) for name, hint in flat_fields(record)]
    return pa.schema(fields)


def required_columns(record: type) -> tuple[str, ...]:
    """The columns every row of a record dataclass holds a value in: its fields that cannot be
    None (a part that may be None, such as `EpochRecord.applied`, adds none)."""
    hints = typing.get_type_hints(record)
    found: list[str] = []
    for f in dataclasses.fields(record):
        hint = hints[f.name]
        if type(None) in typing.get_args(hint):
            continue
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            found += required_columns(hint)
        else:
            found.append(f.name)
    return tuple(found)


RUN_SCHEMA = arrow_schema(RunRecord)
CURVE_SCHEMA = arrow_schema(CurveRecord)
RUN_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in RUN_SCHEMA}
CURVE_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in CURVE_SCHEMA}
# What a row must hold to be a row at all (harness.results.store skips one that does not).
RUN_REQUIRED = required_columns(RunRecord)
CURVE_REQUIRED = required_columns(CurveRecord)
STATUSES = ("ok", "diverged", "failed")  # RunRecord.status
