"""The one record type of a results folder: a `RunRecord` per cell, curve rows per epoch.

The runner builds a `RunRecord`; the store writes and reads it; report and check read the
frames whose columns are its fields. The Parquet schemas are derived from the dataclasses
here, so a column is declared in exactly one place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

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
    realization: str  # lr | batch | hybrid
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

    def as_row(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class CurveRecord:
    """One epoch of one cell."""

    suite: str
    cell_id: str
    epoch: int  # epochs completed: 1 .. epochs
    updates: int  # optimizer steps completed at the end of this epoch
    lr: float
    batch_size: int
    momentum: float
    noise_scale: float
    train_loss: float  # mean over this epoch's steps
    test_loss: float  # NaN on epochs without evaluation
    test_acc: float  # fraction; NaN on epochs without evaluation
    epoch_time_s: float  # training time of this epoch (synchronized)
    eval_time_s: float
    images_per_s: float
    # Tier 0 of the regression gate (harness.analysis.check, docs/gate.md): what training
    # actually applied this epoch, read back where it acts (harness.train.audit), beside the
    # plan's lr, batch_size and momentum above. None in rows written before these existed.
    # Optimizer values are NaN (nesterov None) when its param groups disagree.
    applied_lr: float | None = None  # the optimizer's param groups after the epoch
    applied_momentum: float | None = None  # SGD's momentum; 0 for optimizers without one
    applied_nesterov: bool | None = None
    applied_weight_decay: float | None = None
    applied_batch_size: int | None = None  # largest step, counted from its index tensor
    applied_micro_batch: int | None = None  # largest micro-batch fed to the model
    ghost_size: int | None = None  # the batch-norm modules' (0: plain BN, -1: mixed sizes)
    order_checksum: int | None = None  # example indices in step order (order-dependent)
    augment_checksum: int | None = None  # the augmented uint8 images fed to the model
    label_checksum: int | None = None  # the labels, in step order (order-dependent)
    # The whole training set's cross-entropy in eval mode without augmentation, when the
    # suite asks for it (execution.eval_train_loss); NaN on epochs without evaluation.
    train_eval_loss: float | None = None
    # The gradient noise scale measured during this epoch's steps, when the suite asks for it
    # (execution.noise_scale; harness.train.noise): B_simple = tr(Sigma) / |G|^2 in examples,
    # and its two epoch-averaged components (tr(Sigma) per example, |G|^2 of the data loss's
    # gradient), which re-aggregate over epochs as step-weighted means. NaN where the steps
    # could not be split; None in rows written without the meter.
    noise_b_simple: float | None = None
    noise_trace: float | None = None
    noise_grad_sq: float | None = None
    noise_small_batch: int | None = None  # the small batch b (examples); the big one is B

    def as_row(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


# The tier-0 columns of CurveRecord: a baseline whose curves lack them predates the gate.
AUDIT_COLUMNS = (
    "applied_lr",
    "applied_momentum",
    "applied_nesterov",
    "applied_weight_decay",
    "applied_batch_size",
    "applied_micro_batch",
    "ghost_size",
    "order_checksum",
    "augment_checksum",
    "label_checksum",
)


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
    """The Parquet schema of a record dataclass: schema_version, then its fields in order."""
    hints = typing.get_type_hints(record)
    fields = [pa.field("schema_version", pa.int32())]
    fields += [pa.field(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(record)]
    return pa.schema(fields)


RUN_SCHEMA = arrow_schema(RunRecord)
CURVE_SCHEMA = arrow_schema(CurveRecord)
RUN_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in RUN_SCHEMA}
CURVE_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in CURVE_SCHEMA}
