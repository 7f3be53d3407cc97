"""`harness run`: every cell of a suite, skipping finished ones, resuming killed ones.

A cell is finished when its run row exists with status ok or diverged; a failed cell (out of
memory, say) keeps its checkpoint and is tried again by the next run. Rows are written only
when a cell ends, so an interrupted runner leaves checkpoints, never partial rows.

Several runners may share one results folder (a job array, or two GPUs of one host): each
claims a cell with a lock file before training it and passes over cells another live runner
holds, so no cell is trained twice at once. A killed runner's lock is stale and taken over.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config.suite import Cell, ExecutionSpec, Suite, select
from harness.errors import UserError
from harness.results import store

TRAINABLE_DATASETS = ("cifar10", "synthetic")
TRAINABLE_MODELS = ("wrn", "small_cnn")
FINISHED = ("ok", "diverged")  # statuses a re-run skips; a failed cell is tried again


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # claimed by another runner


def resolve_device(name: str | None) -> Any:
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: unknown device '{name}'; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: MPS is not available here; use --device cpu")
    return device


def load_data(
    suite: Suite, data_root: Path | None, device: Any, channels_last: bool
) -> tuple[Any, str]:
    """The suite's dataset on `device`, and which copy of it that is (see cifar10_source)."""
    from harness.data.cifar10 import (
        cifar10_source,
        load_cifar10,
        resolve_data_root,
        synthetic_cifar10,
    )
    from harness.data.device import DeviceData

    ds = suite.spec.dataset
    if ds.name == "synthetic":
        assert ds.train_size is not None and ds.test_size is not None
        arrays = synthetic_cifar10(ds.train_size, ds.test_size, seed=0)
        source = "synthetic"
    else:
        root = resolve_data_root(data_root)
        arrays = load_cifar10(root, train_size=ds.train_size, test_size=ds.test_size)
        source = cifar10_source(root)
    data = DeviceData.from_arrays(arrays, device, channels_last=channels_last, augment=ds.augment)
    return data, source


def _check_trainable(cells: tuple[Cell, ...], suite: Suite) -> None:
    if suite.spec.dataset.name not in TRAINABLE_DATASETS:
        raise UserError(
            f"{suite.path}: dataset.name: '{suite.spec.dataset.name}' can be planned but not "
            f"trained yet (trainable: {', '.join(TRAINABLE_DATASETS)}); use `harness plan`"
        )
    for cell in cells:
        if cell.model.name not in TRAINABLE_MODELS:
            raise UserError(
                f"{suite.path}: models.{cell.model_name}: '{cell.model.name}' can be planned but "
                f"not trained yet (trainable: {', '.join(TRAINABLE_MODELS)})"
            )


def _finished(results: Path) -> set[str]:
    runs = store.read_runs(results) if results.is_dir() else pd.DataFrame()
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"].isin(FINISHED), "cell_id"])


def run_row(
    cell: Cell,
    result: Any,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """The `runs` row of a finished cell (see store.RUN_COLUMNS)."""
    progress = result.progress
    train_s = progress.train_time_s
    wall = progress.wall_clock_s
    return {
        "suite": cell.suite,
        "experiment": cell.experiment,
        "aliases": list(cell.aliases),
        "cell_id": cell.cell_id,
        "model": cell.model_name,
        "dataset": cell.dataset.name,
        "train_size": cell.plan.train_size,
        "optimizer": cell.optimizer_name,
        "optimizer_kind": cell.optimizer.kind,
        "schedule": cell.schedule_name,
        "realization": cell.schedule["realization"],
        "milestones": list(cell.schedule["milestones"]),
        "seed": cell.seed,
        "status": progress.status,
        "error": progress.error,
        "epochs": progress.epoch,
        "planned_epochs": cell.plan.epochs,
        "updates": progress.updates,
        "planned_updates": cell.plan.updates,
        **result.final,
        "wall_clock_s": wall,
        "train_time_s": train_s,
        "eval_time_s": progress.eval_time_s,
        "warmup_time_s": progress.warmup_time_s,
        "overhead_time_s": wall - train_s - progress.eval_time_s - progress.warmup_time_s,
        "images_per_s": progress.images / train_s if train_s > 0 else math.nan,
        "updates_per_s": progress.updates / train_s if train_s > 0 else math.nan,
        "peak_memory_bytes": result.peak_memory_bytes,
        "precision": cell.training.precision,
        **environment,
        "config": json.dumps(cell.resolved_config(), sort_keys=True),
        "plan": json.dumps([p.as_dict() for p in cell.plan.phases]),
        "paper_test_acc": cell.paper.test_acc if cell.paper else None,
        "paper_updates": cell.paper.updates if cell.paper else None,
        "paper_source": cell.paper.source if cell.paper else None,
        "started_at": dt.datetime.fromtimestamp(progress.started_at, dt.timezone.utc),
        "finished_at": dt.datetime.now(dt.timezone.utc),
    }


def run_suite(
    suite: Suite,
    *,
    results: Path | None = None,
    only: str | None = None,
    device: str | None = None,
    data: Path | None = None,
    force: bool = False,
    max_micro_batch: int | None = None,
    compile_model: bool | None = None,
) -> RunSummary:
    """Train the selected cells of `suite` into `results` (default results/<suite name>)."""
    from harness.results.provenance import environment

    results = results or Path("results") / suite.name
    cells = select(suite.cells, only)
    if not cells:
        raise UserError(f"--only {only!r}: matches no cell of {suite.path}; see `harness plan`")
    _check_trainable(cells, suite)
    execution = _execution(suite.spec.execution, max_micro_batch, compile_model, cells)
    done = set() if force else _finished(results)
    summary = RunSummary(skipped=[c.cell_id for c in cells if c.cell_id in done])
    todo = [c for c in cells if c.cell_id not in done]
    say = _Reporter()
    for cell in cells:
        if cell.cell_id in done:
            say.line(f"skip  {cell.cell_id} {cell.label}: finished (rerun with --force)")
    if not todo:
        return summary
    torch_device = resolve_device(device)
    dataset, source = load_data(suite, data, torch_device, execution.channels_last)
    env = {**environment(torch_device), "data_source": source}
    for cell in todo:
        # Concurrent runners on one folder (a job array, say) each take the cells nobody holds.
        with store.claim(results, cell.cell_id) as mine:
            if not mine:
                summary.busy.append(cell.cell_id)
                lock = store.lock_path(results, cell.cell_id)
                say.line(
                    f"busy  {cell.cell_id} {cell.label}: another runner is training it "
                    f"(delete {lock} if that runner is gone)"
                )
                continue
            if not force and store.cell_status(results, cell.cell_id) in FINISHED:
                summary.skipped.append(cell.cell_id)  # finished by another runner meanwhile
                continue
            _run_cell(cell, results, dataset, execution, env, force, say, summary)
    return summary


def _run_cell(
    cell: Cell,
    results: Path,
    dataset: Any,
    execution: ExecutionSpec,
    env: dict[str, Any],
    force: bool,
    say: _Reporter,
    summary: RunSummary,
) -> None:
    from harness.train.loop import train_cell

    checkpoint = store.checkpoint_path(results, cell.cell_id)
    if force and checkpoint.exists():
        checkpoint.unlink()
    say.start(cell, resumed=checkpoint.exists())
    try:
        result = train_cell(cell, dataset, execution, checkpoint, on_epoch=say.epoch)
    finally:
        say.stop()
    row = run_row(cell, result, env)
    store.write_cell(results, row, result.progress.curves)
    if result.progress.status == "failed":
        # The row says why; the checkpoint stays, and the next run resumes the cell.
        summary.failed.append(cell.cell_id)
        say.line(f"fail  {cell.cell_id} {cell.label}: {result.progress.error}")
        return
    checkpoint.unlink(missing_ok=True)
    summary.ran.append(cell.cell_id)
    say.line(_summary_line(cell, row))


def _execution(
    spec: ExecutionSpec,
    max_micro_batch: int | None,
    compile_model: bool | None,
    cells: tuple[Cell, ...],
) -> ExecutionSpec:
    updates: dict[str, Any] = {}
    if max_micro_batch is not None:
        ghosts = {c.training.ghost_batch_size for c in cells}
        bad = [g for g in ghosts if max_micro_batch % g]
        if max_micro_batch <= 0 or bad:
            raise UserError(
                f"--max-micro-batch {max_micro_batch}: must be a positive multiple of the ghost "
                f"batch size ({', '.join(map(str, sorted(ghosts)))})"
            )
        updates["max_micro_batch"] = max_micro_batch
    if compile_model is not None:
        updates["compile"] = compile_model
    return spec.model_copy(update=updates)


def _summary_line(cell: Cell, row: dict[str, Any]) -> str:
    return (
        f"{row['status']:<5} {cell.cell_id} {cell.label}: "
        f"test acc {row['final_test_acc']:.4f}, train loss {row['final_train_loss']:.4f}, "
        f"{row['updates']} updates (plan {row['planned_updates']}), "
        f"{row['wall_clock_s']:.1f} s, {row['images_per_s']:.0f} img/s"
    )


class _Reporter:
    """A rich progress bar per cell on a terminal; one line per finished cell otherwise."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = sys.stderr.isatty() and not os.environ.get("CI")
        self.progress: Any = None
        self.task: Any = None

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def start(self, cell: Cell, resumed: bool) -> None:
        verb = "resume" if resumed else "train"
        if not self.live:
            self.line(f"{verb} {cell.cell_id} {cell.label} ({cell.plan.updates} updates)")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn(f"{verb} {cell.cell_id} {cell.label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("cell", total=cell.plan.epochs, status="")

    def epoch(self, cell: Cell, row: dict[str, Any]) -> None:
        if self.progress is None:
            return
        status = (
            f"upd {row['updates']}  loss {row['train_loss']:.3f}  "
            f"acc {row['test_acc']:.3f}  {row['images_per_s']:.0f} img/s"
        )
        self.progress.update(self.task, completed=row["epoch"], status=status)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
