"""Weights & Biases: one run per cell, id = the cell id, in the project named after the suite.

Offline by default (nothing leaves the machine; `wandb sync RESULTS/logs/wandb/offline-run-*`
uploads later): $WANDB_MODE=online streams to the server instead. The run folders go under
$WANDB_DIR where it is set, else RESULTS/logs/ (made without following a link; the files in
them are wandb's own). Online, a resumed cell continues its run (resume="allow", step =
epoch); offline, each segment is a run folder of its own with the same id, whose steps follow
the last segment's (`wandb sync --append` joins them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import wandb

from harness.app.trackers import TrackedRun, safe_name
from harness.fsio import make_folder


def open_run(run: TrackedRun) -> WandbRun:
    return WandbRun(run)


class WandbRun:
    def __init__(self, run: TrackedRun) -> None:
        mode = os.environ.get("WANDB_MODE") or "offline"
        where = os.environ.get("WANDB_DIR")
        if where:
            folder = Path(where)
        else:
            folder = run.logs
            make_folder(folder / "wandb", inside=run.inside)
        extra: dict[str, Any] = {} if mode == "offline" else {"resume": "allow"}
        self.wb = wandb.init(
            project=safe_name(run.project).replace(" ", "_"),
            name=run.name,
            id=run.cell_id,
            config=dict(run.config),
            dir=str(folder),
            mode=mode,  # type: ignore[arg-type]
            settings=wandb.Settings(console="off", silent=True, save_code=False, disable_git=True),
            **extra,
        )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.wb.log(dict(values), step=step)

    def finish(self, summary: Mapping[str, Any] | None) -> None:
        if summary is not None:
            self.wb.summary.update(dict(summary))
        failed = summary is not None and summary.get("status") not in ("ok", "diverged")
        self.wb.finish(exit_code=1 if failed else 0)
