"""The seam between a suite and the layers under it: a cell becomes a job, a result a record.

The config layer speaks in cells (pydantic specs with names from the suite file); the
training layer takes small frozen values (`TrainJob`, and `Execution` as the suite gives it);
the results layer stores `RunRecord`s. Only this module knows all three, so each of them can
change without the others noticing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.config.suite import Cell, FactorySpec
from harness.core.epoch_record import EpochRecord
from harness.core.execution import Execution, micro_batch_problem
from harness.core.factory_spec import FactoryRef
from harness.core.metrics import CELL_METRICS
from harness.errors import UserError
from harness.results.record import CurveRecord, RunRecord
from harness.train.spec import ModelConfig, OptimizerConfig, TrainJob


def train_job(cell: Cell) -> TrainJob:
    """What the training layer needs of `cell`: every value that can change its numbers."""
    spec = cell.optimizer
    weight_decay = (
        spec.weight_decay if spec.weight_decay is not None else cell.training.weight_decay
    )
    return TrainJob(
        cell_id=cell.cell_id,
        label=cell.label,
        seed=cell.seed,
        model=model_config(cell),
        optimizer=OptimizerConfig(
            kind=spec.kind,
            lr=spec.lr,
            momentum=spec.momentum or 0.0,
            betas=spec.betas,
            eps=spec.eps,
            weight_decay=weight_decay,
        ),
        plan=cell.plan,
        num_classes=cell.dataset.num_classes,
        ghost_batch_size=cell.training.ghost_batch_size,
        drop_last=cell.training.drop_last,
        eval_every=cell.training.eval_every,
        precision=cell.training.precision,
        bn_stats=cell.training.bn_stats,
        bn_stats_images=cell.training.bn_stats_images,
        realization=cell.schedule["realization"],
        decided=cell.decided,
    )


def model_config(cell: Cell) -> ModelConfig:
    """The cell's model: a registered name and its parameters, or the user's factory."""
    model = cell.model
    if isinstance(model, FactorySpec):
        ref = FactoryRef.of(model.factory, dict(model.kwargs), cell.folder)
        return ModelConfig(name=cell.model_name, factory=ref)
    return ModelConfig.of(model.name, **model.model_dump(exclude={"name"}))


def execution(
    spec: Execution,
    cells: Sequence[Cell],
    max_micro_batch: int | None = None,
    compile_model: bool | None = None,
) -> Execution:
    """The suite's execution settings with the command line's overrides applied."""
    update: dict[str, Any] = {}
    if max_micro_batch is not None:
        why = micro_batch_problem(max_micro_batch, (c.training.ghost_batch_size for c in cells))
        if why is not None:
            raise UserError(f"--max-micro-batch {max_micro_batch}: {why}")
        update["max_micro_batch"] = max_micro_batch
    if compile_model is not None:
        update["compile"] = compile_model
        if not compile_model:  # --no-compile: eager, whatever mode the suite named
            update["compile_mode"] = "default"
    return dataclasses.replace(spec, **update)


def run_record(
    cell: Cell,
    progress: Any,
    final: Mapping[str, float],
    peak_memory_bytes: int,
    environment: Mapping[str, Any],
) -> RunRecord:
    """The `runs` row of a cell that ended (ok, diverged or failed); `final` its metrics
    (`harness.core.metrics.cell_metrics`, as `CellResult.final` gives them)."""
    train_s = progress.train_time_s
    wall = progress.wall_clock_s
    # An adaptive cell's plan is the one its decisions gave (before training: the bounds).
    plan = cell.plan_after(progress.decisions)
    # Every registered metric (harness.core.metrics), NaN where `final` lacks it (a failure).
    metrics: dict[str, Any] = {name: final.get(name, math.nan) for name in CELL_METRICS}
    return RunRecord(
        suite=cell.suite,
        experiment=cell.experiment,
        aliases=list(cell.aliases),
        cell_id=cell.cell_id,
        model=cell.model_name,
        dataset=cell.dataset.name,
        train_size=cell.plan.train_size,
        optimizer=cell.optimizer_name,
        optimizer_kind=cell.optimizer.kind,
        schedule=cell.schedule_name,
        realization=cell.schedule["realization"],
        milestones=list(cell.schedule["milestones"]),
        seed=cell.seed,
        status=progress.status,
        error=progress.error,
        epochs=progress.epoch,
        planned_epochs=cell.plan.epochs,
        updates=progress.updates,
        planned_updates=plan.updates,
        wall_clock_s=wall,
        train_time_s=train_s,
        eval_time_s=progress.eval_time_s,
        warmup_time_s=progress.warmup_time_s,
        overhead_time_s=wall - train_s - progress.eval_time_s - progress.warmup_time_s,
        images_per_s=progress.images / train_s if train_s > 0 else math.nan,
        updates_per_s=progress.updates / train_s if train_s > 0 else math.nan,
        peak_memory_bytes=peak_memory_bytes,
        precision=cell.training.precision,
        data_source=environment.get("data_source"),
        device=environment["device"],
        device_name=environment["device_name"],
        world_size=environment.get("world_size"),
        devices=environment.get("devices"),
        hostname=environment["hostname"],
        python_version=environment["python_version"],
        torch_version=environment["torch_version"],
        harness_version=environment["harness_version"],
        git_commit=environment["git_commit"],
        git_dirty=environment["git_dirty"],
        allocator=environment.get("allocator"),
        config=json.dumps(cell.resolved_config(), sort_keys=True),
        plan=json.dumps([p.as_dict() for p in plan.phases]),
        paper_test_acc=cell.paper.test_acc if cell.paper else None,
        paper_updates=cell.paper.updates if cell.paper else None,
        paper_source=cell.paper.source if cell.paper else None,
        started_at=dt.datetime.fromtimestamp(progress.started_at, dt.timezone.utc),
        finished_at=dt.datetime.now(dt.timezone.utc),
        sweep_metric=cell.sweep.metric if cell.sweep else None,
        sweep_target=cell.sweep.target if cell.sweep else None,
        equivalence_margin=cell.equivalence_margin,
        **metrics,
        **environment.get("models", {}).get(cell.model_name, {}),
    )


def curve_records(cell: Cell, curves: Sequence[EpochRecord]) -> list[CurveRecord]:
    """The training layer's epoch records as `curves` records of `cell`'s suite."""
    return [CurveRecord(suite=cell.suite, measured=record) for record in curves]
