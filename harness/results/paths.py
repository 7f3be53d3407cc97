"""Where a user's runs go by default: `runs/<suite>` (or `$HARNESS_RESULTS/<suite>`), and
what a results folder holds.

A user's runs and the project's committed evidence never share a folder: the evidence lives
under `results/` (tracked by git, read by giving `--results results/...` or the folder to
`harness report`), while every command that writes without being told where writes under this
root, which the repository's .gitignore leaves out. So a fresh clone's `harness run SUITE`
trains instead of finding the committed rows finished, and nothing a user runs with the
defaults can modify a tracked file. The root is relative to the working directory, as every
other path a user types is.

A results folder (default ``runs/<suite>``) holds::

    runs/<cell_id>.parquet      one row per finished cell   pandas.read_parquet(DIR / "runs")
    curves/<cell_id>.parquet    one row per cell and epoch  pandas.read_parquet(DIR / "curves")
    checkpoints/<cell_id>.pt    resume state of an unfinished cell (deleted when it finishes)
    checkpoints/<cell_id>.lock  who is training the cell (see harness.results.lock)
    logs/<cell_id>.log          the traceback of a cell that failed with a bug
    logs/tb, logs/wandb, logs/mlruns   a tracker's files (`harness run --track`, app.tracking)
    slurm/                      jobs.json and submitit's logs (harness.app.cluster)

The functions below (`run_file`, `curve_file`, `checkpoint_path`, `log_file`, `logs_dir`,
`slurm_dir`, `slurm_logs`, `jobs_file`, `SUBFOLDERS`) are the one spelling of these paths; no
other module joins them by hand (tests/test_architecture.py).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "HARNESS_RESULTS"
DEFAULT_ROOT = Path("runs")


def results_root() -> Path:
    """The folder that holds the default results folders: $HARNESS_RESULTS, else ./runs."""
    value = os.environ.get(ROOT_ENV, "").strip()
    return Path(value) if value else DEFAULT_ROOT


def default_folder(name: str) -> Path:
    """A suite's (or `harness bench`'s) results folder when none is given."""
    return results_root() / name


SUBFOLDERS = ("runs", "curves", "checkpoints", "logs")  # what a run writes into


def runs_dir(results: Path) -> Path:
    return results / "runs"


def curves_dir(results: Path) -> Path:
    return results / "curves"


def run_file(results: Path, cell_id: str) -> Path:
    return runs_dir(results) / f"{cell_id}.parquet"


def curve_file(results: Path, cell_id: str) -> Path:
    return curves_dir(results) / f"{cell_id}.parquet"


def checkpoint_path(results: Path, cell_id: str) -> Path:
    return checkpoints_dir(results) / f"{cell_id}.pt"


def checkpoints_dir(results: Path) -> Path:
    return results / "checkpoints"


def log_file(results: Path, cell_id: str) -> Path:
    return logs_dir(results) / f"{cell_id}.log"


def logs_dir(results: Path) -> Path:
    """A failed cell's traceback logs, and the trackers' folders under it."""
    return results / "logs"


def slurm_dir(results: Path) -> Path:
    return results / "slurm"


def slurm_logs(results: Path) -> Path:
    """submitit's logs of a cluster submission's tasks (one flat folder)."""
    return slurm_dir(results) / "logs"


def jobs_file(results: Path) -> Path:
    """Where a cluster submission's tasks are: cell id -> task id and log paths."""
    return slurm_dir(results) / "jobs.json"
