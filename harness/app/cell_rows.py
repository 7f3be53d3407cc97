"""A cell's rows as the runner writes them, and what a failure leaves: a failed run row with
one line saying why, and a bug's traceback in the cell's log (`harness.results.paths` names
the paths)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import traceback
from pathlib import Path
from typing import Any

from harness.app import jobs
from harness.config.suite import Cell
from harness.errors import UserError
from harness.fsio import LinkRefused, atomic_path, remove
from harness.results import paths, store
from harness.results.record import CurveRecord, RunRecord
from harness.train.checkpoint import Progress

NO_METRICS = ("final_test_acc", "best_test_acc", "final_test_loss", "final_train_loss")


def failed_record(cell: Cell, env: dict[str, Any], why: str) -> RunRecord:
    """The run row of a cell that failed before training (its lock file is a link, a folder,
    a device) or in it: status failed, `why` its one line, no metrics."""
    progress = Progress(status="failed", error=why)
    return jobs.run_record(cell, progress, dict.fromkeys(NO_METRICS, math.nan), 0, env)


def write_rows(
    cell: Cell, results: Path, record: RunRecord, curves: list[CurveRecord]
) -> RunRecord:
    """Write the cell's rows; returns the record written. A curve file that is a link fails
    the cell (its run row alone is written, saying why) rather than the suite."""
    try:
        try:
            store.write_cell(results, record, curves)
        except LinkRefused as exc:
            if exc.path != paths.curve_file(results, cell.cell_id):
                raise  # runs/ or curves/ itself: the whole folder, not this cell
            record = dataclasses.replace(record, status="failed", error=str(exc))
            store.write_run(results, record)
    except OSError as exc:
        raise UserError(
            f"{results}: could not write the rows of cell {cell.cell_id} "
            f"({exc.strerror or exc}); free space or pass --results DIR, then rerun"
        ) from None
    return record


def failure_line(cell: Cell, exc: Exception, results: Path) -> str:
    """One line for the row; a bug's traceback goes to a log file beside the rows."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UserError):
        return message
    log = paths.log_file(results, cell.cell_id)
    try:
        with atomic_path(log, inside=results) as tmp:
            tmp.write_text("".join(traceback.format_exception(exc)))
        where = f"; traceback in {log}"
    except (OSError, UserError):  # no log beside the rows (a link there is never followed)
        # A full disk: no log, rather than an empty one that seems to say nothing happened.
        with contextlib.suppress(OSError, UserError):
            remove(log, inside=results)
        where = ""
    return f"cell {cell.cell_id} ({cell.label}) failed: {type(exc).__name__}: {message}{where}"
