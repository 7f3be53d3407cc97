"""What `harness run` shows while it works: a progress bar on a terminal, lines in a log.

Without a terminal (a batch job, CI, a GPU machine whose output is a log file) every epoch is
one flushed line, so a log shows progress as it happens.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from harness.config.suite import Cell
from harness.core.epoch import EpochRecord
from harness.train.spec import TrainJob


class RunConsole:
    """A rich progress bar per cell on a terminal; one line per epoch and per cell otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        # quiet: a data-parallel process other than rank 0 (rank 0 speaks for the job).
        self.console = Console(stderr=True, quiet=quiet)
        self.live = sys.stderr.isatty() and not os.environ.get("CI") and not quiet
        self.progress: Any = None
        self.task: Any = None
        self.epochs = 0

    def line(self, text: str) -> None:
        try:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
            self.console.file.flush()
        except BrokenPipeError:
            # Whoever read this output is gone (a killed `--workers` parent): pause, as on
            # preemption, rather than die here with the epoch's work lost.
            from harness.train.preempt import orphaned  # torch: imported where needed

            orphaned()

    def start(self, cell: Cell, resumed: bool) -> None:
        verb = "resume" if resumed else "train"
        self.epochs = cell.plan.epochs
        if not self.live:
            self.line(f"{verb} {cell.cell_id} {cell.label} ({cell.plan.updates} updates)")
            return
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
        self.progress.update(self.task, completed=row.epoch, status=status)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
