"""One epoch of one cell as training measured it: the `curves` columns, each declared once.

`EpochRecord` is what the training loop fills at the end of an epoch; the two things that
measure beside the loop contribute a typed part each: `Applied` (tier 0 of the regression
gate, filled by harness.train.audit: what training actually applied, read back where it acts)
and `NoiseReading` (the gradient noise scale, filled by harness.train.noise when the suite
asks for it). The results layer stores the record as one flat row
(harness.results.record.CurveRecord: the suite's name and this record); its Parquet columns
are these fields in order, a part's fields in its place (`flat_fields`), and a part that is
None reads as nulls (rows written before it existed, or without the noise meter).

Plain dataclasses of plain values, no torch: the training layer fills them, the results layer
derives its schema from them, and a checkpoint holds their flat columns (`columns`,
`from_columns`), which load with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Applied:
    """What training actually applied this epoch (harness.train.audit; docs/gate.md), beside
    the plan's lr, batch size and momentum. Optimizer values are NaN (nesterov None) when its
    param groups disagree."""

    applied_lr: float  # the optimizer's param groups after the epoch
    applied_momentum: float  # SGD's momentum; 0 for optimizers without one
    applied_nesterov: bool | None
    applied_weight_decay: float
    applied_batch_size: int  # largest step, counted from its index tensor
    applied_micro_batch: int  # largest micro-batch fed to the model
    ghost_size: int  # the batch-norm modules' (0: plain BN, -1: mixed sizes)
    order_checksum: int  # example indices in step order (order-dependent)
    augment_checksum: int  # the augmented uint8 images fed to the model
    label_checksum: int  # the labels, in step order (order-dependent)


@dataclass(frozen=True)
class NoiseReading:
    """The gradient noise scale measured during this epoch's steps (execution.noise_scale;
    harness.train.noise): B_simple = tr(Sigma) / |G|^2 in examples, and its two
    epoch-averaged components (tr(Sigma) per example, |G|^2 of the data loss's gradient),
    which re-aggregate over epochs as step-weighted means. NaN where the steps could not be
    split."""

    noise_b_simple: float
    noise_trace: float
    noise_grad_sq: float
    noise_small_batch: int | None  # the small batch b (examples); the big one is B


@dataclass(frozen=True)
class Decided:
    """The adaptive realization's decision that this epoch began with (harness.core.adaptive):
    the B_simple it read from the epochs since the previous decision (NaN: none measured, the
    batch kept) and the batch it chose, which this epoch trained with."""

    decision_b_simple: float
    decision_batch_size: int


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one cell (the loop's fields, then the parts the audit and meter fill)."""

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
    # Tier 0 of the regression gate; None in rows written before it existed.
    applied: Applied | None = None
    # The training set's cross-entropy in eval mode without augmentation, when the suite asks
    # for it (execution.eval_train_loss); NaN on epochs without evaluation.
    train_eval_loss: float | None = None
    # The images it was measured on: the first execution.train_loss_images of the training
    # set (all N where that is None or larger); None where it was not measured.
    train_eval_images: int | None = None
    noise: NoiseReading | None = None  # None without the meter
    decided: Decided | None = None  # None but on an adaptive cell's decision epochs

    def columns(self) -> dict[str, Any]:
        """The flat `curves` row: column name -> value, in column order."""
        return flat_columns(self)

    @classmethod
    def from_columns(cls, row: Mapping[str, Any]) -> EpochRecord:
        """The record of a flat row (`columns`); a part none of whose columns hold a value is
        None. A missing loop column is a KeyError."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            part = _part_type(hints[f.name])
            if part is None:
                if f.name in row or f.default is dataclasses.MISSING:
                    values[f.name] = row[f.name]
            elif any(row.get(name) is not None for name, _ in flat_fields(part)):
                values[f.name] = part(**{p.name: row.get(p.name) for p in dataclasses.fields(part)})
        return cls(**values)


def _part_type(annotation: Any) -> type | None:
    """The dataclass a field holds (`X` or `X | None`), or None for a plain column."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def flat_fields(record: type) -> list[tuple[str, Any]]:
    """(column, annotation) of a record dataclass in order, a part's columns in its place."""
    hints = typing.get_type_hints(record)
    found: list[tuple[str, Any]] = []
    for f in dataclasses.fields(record):
        part = _part_type(hints[f.name])
        found += [(f.name, hints[f.name])] if part is None else flat_fields(part)
    return found


def flat_columns(record: Any) -> dict[str, Any]:
    """A record dataclass's values as flat columns (`flat_fields`; a None part: nulls)."""
    hints = typing.get_type_hints(type(record))
    row: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        part = _part_type(hints[f.name])
        if part is None:
            row[f.name] = value
        elif value is None:
            row.update((name, None) for name, _ in flat_fields(part))
        else:
            row.update(flat_columns(value))
    return row
