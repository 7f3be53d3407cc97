"""`harness run --track NAME` and `harness report --track NAME`: the trackers driven.

During a run, `TrackedConsole` is the run's console (what the runner tells of each cell) that
also streams each cell to the trackers: a run per cell opened at its first epoch, each epoch's
curve row logged as the loop records it (the same values the curves Parquet gets), the run
row as the summary once the rows are written, and a paused cell's run closed resumable. After
the fact, `export` sends the rows of results folders to the trackers the same way.

A tracker never changes a result or fails a cell: every call into one is guarded, and its
first error is one warning line, after which the run goes on without that tracker (an
unwritable folder would fail every cell alike). Rows are written by the runner alone, before
and whatever the trackers do.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.app.console import RunConsole
from harness.app.trackers import (
    TrackedRun,
    Tracker,
    curve_values,
    open_tracker,
    require,
    run_summary,
)
from harness.config.suite import Cell, Suite
from harness.core.epoch_record import EpochRecord
from harness.core.naming import cell_label
from harness.errors import UserError, printable
from harness.results import paths, store
from harness.train.spec import TrainJob


def suite_trackers(suite: Suite, flags: Sequence[str]) -> tuple[str, ...]:
    """The suite's `tracking.track` and the command line's --track, checked: one line naming
    the extra to install where a tracker's package is missing, before anything trains."""
    return require([*suite.spec.tracking.track, *flags])


class _Guard:
    """The trackers of a run, each call into one guarded: its first error is one warning and
    the tracker is off for the rest of the run."""

    def __init__(self, names: Sequence[str], say: Callable[[str], None]) -> None:
        self.names = tuple(names)
        self.say = say
        self.broken: set[str] = set()

    @contextlib.contextmanager
    def calling(self, name: str) -> Iterator[None]:
        try:
            with warnings.catch_warnings():
                # A tracker library's own deprecations are not the run's to report.
                warnings.simplefilter("ignore")
                yield
        except Exception as exc:  # any: a tracker never fails a cell
            self.broken.add(name)
            why = " ".join(str(exc).split())[:300] or type(exc).__name__
            self.say(
                f"warning: --track {name}: {type(exc).__name__}: {why}; the run goes on "
                "without it (its rows are unaffected)"
            )

    def live(self) -> list[str]:
        return [n for n in self.names if n not in self.broken]


class TrackedConsole(RunConsole):
    """The run's console, streaming each cell it hears of to `names` (harness.app.trackers).

    `project`: the trackers' project/experiment name; `results`: the results folder (local
    stores under its logs/). Rank 0 alone gets one (under torchrun the others say nothing)."""

    def __init__(self, names: Sequence[str], project: str, results: Path, **kw: Any) -> None:
        super().__init__(**kw)
        self.project = project
        self.results = results
        self.guard = _Guard(names, self.line)
        self.cell: Cell | None = None
        self.resumed = False
        self.runs: dict[str, Tracker] = {}

    def start(self, cell: Cell, resumed: bool) -> None:
        self.close()  # a paused cell's runs, left open for its summary that never came
        super().start(cell, resumed)
        self.cell, self.resumed = cell, resumed

    def _run(self, name: str) -> Tracker:
        if name not in self.runs:
            assert self.cell is not None
            run = TrackedRun(
                project=self.project,
                cell_id=self.cell.cell_id,
                label=self.cell.label,
                config=self.cell.resolved_config(),
                logs=paths.logs_dir(self.results),
                inside=self.results,
                resumed=self.resumed,
            )
            self.runs[name] = open_tracker(name, run)
        return self.runs[name]

    def epoch(self, job: TrainJob, row: EpochRecord) -> None:
        super().epoch(job, row)
        values = curve_values(row.columns())
        for name in self.guard.live():
            with self.guard.calling(name):
                self._run(name).log(row.epoch, values)

    def finished(self, cell: Cell, record: Any) -> None:
        super().finished(cell, record)
        summary = run_summary(record.as_row())
        for name in self.guard.live():
            with self.guard.calling(name):
                self._run(name).finish(summary)
        self.runs.clear()
        self.cell = None

    def close(self) -> None:
        """Close the runs still open (a paused cell's): resumable, without a summary."""
        for name, run in list(self.runs.items()):
            if name not in self.guard.broken:
                with self.guard.calling(name):
                    run.finish(None)
        self.runs.clear()


def export(
    folders: Sequence[Path],
    names: Sequence[str],
    *,
    logs: Path | None = None,
    project: str | None = None,
    say: Callable[[str], None],
    cells: set[str] | None = None,
) -> int:
    """The rows of `folders` sent to the trackers `names`: one run per cell, its curves as
    steps and its run row as summary. `logs`: where local stores go (default: each folder's
    logs/); `project`: default each row's suite name. Returns the cells exported."""
    names = require(names)
    guard = _Guard(names, say)
    count = 0
    for folder in folders:
        runs = store.read_runs(folder)
        if runs.empty:
            continue
        curves = store.read_curves(folder)
        by_cell = {} if curves.empty else dict(tuple(curves.groupby("cell_id")))
        for raw in runs.to_dict("records"):
            row = {str(k): v for k, v in raw.items()}
            if cells is not None and row["cell_id"] not in cells:
                continue
            run = TrackedRun(
                project=project or str(row["suite"]),
                cell_id=str(row["cell_id"]),
                label=_label(row),
                config=json.loads(row["config"]),
                logs=logs if logs is not None else paths.logs_dir(folder),
                inside=logs if logs is not None else folder,
                resumed=False,
            )
            frame = by_cell.get(row["cell_id"])
            steps: list[dict[str, Any]] = []
            if frame is not None:
                steps = [
                    {str(k): v for k, v in step.items()}
                    for step in frame.sort_values("epoch").to_dict("records")
                ]
            for name in guard.live():
                with guard.calling(name):
                    tracker = open_tracker(name, run)
                    for step in steps:
                        tracker.log(int(step["epoch"]), curve_values(step))
                    tracker.finish(run_summary(row))
            count += 1
    if not guard.live():
        raise UserError("--track: no tracker could take the rows (the warnings above say why)")
    return count


def _label(row: dict[str, Any]) -> str:
    return printable(
        cell_label(str(row["experiment"]), str(row["optimizer"]), str(row["schedule"]),
                   int(row["seed"]))
    )  # fmt: skip
