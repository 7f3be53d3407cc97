"""What `harness run` shows while it works: progress bars on a terminal, lines in a log.

On a terminal: a bar for the cell and one for the suite, each moving with every optimizer step
(the runner calls `tick` after each one), with the time elapsed and an ETA. Their unit is
training images, not steps, so a phase of larger batches (fewer, longer steps) does not skew
the ETA. Without a terminal (a batch job, CI, a GPU machine whose output is a log file, or
$CI set) every epoch is one flushed line and `tick` does nothing, so logs are as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.config.suite import Cell
from harness.core.epoch_record import EpochRecord
from harness.core.schedule import Plan
from harness.errors import printable
from harness.train.spec import TrainJob


def images_through(plan: Plan, epochs: int) -> int:
    """Training images of the plan's first `epochs` epochs."""
    total = 0
    for p in plan.phases:
        span = p.end_epoch - p.start_epoch
        done = min(max(epochs - p.start_epoch, 0), span)
        total += p.updates * p.batch_size * done // max(span, 1)
    return total


def batch_at(plan: Plan, epoch: int) -> int:
    """The batch size of the (0-based) epoch `epoch` (the last phase's after the end)."""
    for p in plan.phases:
        if p.start_epoch <= epoch < p.end_epoch:
            return p.batch_size
    return plan.phases[-1].batch_size


class RunConsole:
    """Rich progress bars (cell and suite) on a terminal; one line per epoch and per cell
    otherwise. `console`: where to draw (default stderr; tests pass their own)."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        # quiet: a data-parallel process other than rank 0 (rank 0 speaks for the job).
        self.console = console or Console(stderr=True, quiet=quiet)
        self.live = self.console.is_terminal and not os.environ.get("CI") and not quiet
        self.progress: Any = None
        self.task: Any = None
        self.suite_task: Any = None
        self.epochs = 0
        self.plan: Plan | None = None
        self.batch = 0
        self.suite_total = 0  # training images of the cells this run trains
        self.suite_done = 0  # ... of the cells it has finished (or stopped)
        self.cell_done = 0

    def line(self, text: str) -> None:
        try:
            # printable: a line may carry a name or an error read from someone else's rows.
            self.console.print(printable(text), highlight=False, markup=False, soft_wrap=True)
            self.console.file.flush()
        except BrokenPipeError:
            # Whoever read this output is gone (a killed `--workers` parent): pause, as on
            # preemption, rather than die here with the epoch's work lost.
            from harness.train.preempt import orphaned  # torch: imported where needed

            orphaned()

    def plan_suite(self, cells: Sequence[Cell]) -> None:
        """The cells this run is about to train: the suite bar's total."""
        self.suite_total = sum(images_through(c.plan, c.plan.epochs) for c in cells)
        self.suite_done = 0

    def start(self, cell: Cell, resumed: bool) -> None:
        verb = "resume" if resumed else "train"
        self.epochs = cell.plan.epochs
        self.plan = cell.plan
        self.batch = batch_at(cell.plan, 0)
        self.cell_done = 0
        if not self.live:
            self.line(f"{verb} {cell.cell_id} {cell.label} ({cell.plan.updates} updates)")
            return
        self.progress = Progress(
            # The label as the task's description, not in the format string: a name holding
            # "{x}" or "[red]" is shown as written (no str.format, no markup).
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        total = images_through(cell.plan, cell.plan.epochs)
        self.task = self.progress.add_task(
            printable(f"{verb} {cell.cell_id} {cell.label}"), total=total, status="epoch 1"
        )
        if self.suite_total > total:
            self.suite_task = self.progress.add_task(
                "suite", total=self.suite_total, completed=self.suite_done, status=""
            )

    def tick(self) -> None:
        """One optimizer step taken (of the current epoch's batch)."""
        if self.progress is None:
            return
        self.cell_done += self.batch
        self.progress.update(self.task, completed=self.cell_done)
        if self.suite_task is not None:
            self.progress.update(self.suite_task, completed=self.suite_done + self.cell_done)

    def epoch(self, job: TrainJob, row: EpochRecord) -> None:
        status = (
            f"upd {row.updates}  loss {row.train_loss:.4f}  "
            f"acc {row.test_acc:.4f}  {row.images_per_s:.0f} img/s"
        )
        if self.progress is None:
            self.line(
                f"  epoch {row.epoch}/{self.epochs} {job.cell_id}: {status}  "
                f"{row.epoch_time_s:.1f} s"
            )
            return
        assert self.plan is not None
        # The count from the plan, so a resumed cell's bar starts where it is.
        self.cell_done = images_through(self.plan, row.epoch)
        self.batch = batch_at(self.plan, row.epoch)
        shown = f"epoch {min(row.epoch + 1, self.epochs)}/{self.epochs}  {status}"
        self.progress.update(self.task, completed=self.cell_done, status=shown)
        if self.suite_task is not None:
            self.progress.update(self.suite_task, completed=self.suite_done + self.cell_done)

    def finished(self, cell: Cell, record: Any) -> None:
        """The cell's rows are written (`record`: its run row): nothing more to draw here;
        `harness.app.tracking.TrackedConsole` sends it to the trackers as the summary."""

    def stop(self) -> None:
        self.suite_done += self.cell_done
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.task = self.suite_task = None
