"""`harness status`: where every cell of a suite stands, read from its results folder alone.

A cell is, in this order of evidence:

* **running**: a live runner holds its claim (harness.results.lock; read, never taken);
* **done** / **diverged** / **failed**: its run row says so (failed with its one-line error and
  the log holding the traceback or the Slurm task's output);
* **paused**: a checkpoint and no row (stopped by --stop-after, killed or preempted: the next
  run resumes it);
* **queued**: submitted to a cluster (<results>/slurm/jobs.json) and not started;
* **pending**: nothing yet.

Reading touches nothing: no lock is taken, no damaged file moved (a damaged run file reads as
no row).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from harness.config.suite import Cell, load_suite, select_some
from harness.errors import UserError, printable
from harness.fsio import read_bytes
from harness.results import lock, paths, store
from harness.results.paths import default_folder

STATES = ("done", "diverged", "failed", "running", "paused", "queued", "pending")


@dataclass(frozen=True)
class CellState:
    cell_id: str
    label: str
    state: str  # one of STATES
    detail: str = ""  # holder, error, log path, job id


MAX_JOBS_BYTES = 64 << 20  # a job list of MAX_CELLS cells is a few MB


def cluster_jobs(results: Path) -> dict[str, dict[str, str]]:
    """The Slurm (or local) tasks `harness run --executor` submitted, by cell id; none if the
    list is missing or unreadable (read through `harness.fsio.read_bytes`: a FIFO, a link to
    /dev/zero or an oversize file there is never read)."""
    path = paths.jobs_file(results)
    try:
        data = json.loads(read_bytes(path, inside=results, limit=MAX_JOBS_BYTES))
    except (OSError, ValueError, UserError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def cell_state(results: Path, cell: Cell, jobs: dict[str, dict[str, str]]) -> CellState:
    job = jobs.get(cell.cell_id, {})

    def state(name: str, detail: str = "") -> CellState:
        return CellState(cell.cell_id, cell.label, name, detail)

    who = lock.live_holder(results, cell.cell_id)
    if who is not None:
        task = f", task {job['job_id']}" if job.get("job_id") else ""
        return state("running", f"by {who}{task}")
    row = store.run_row(results, cell.cell_id)  # the runner's rule: a foreign file is none
    if row is not None and row["status"] in ("ok", "diverged"):
        return state("done" if row["status"] == "ok" else "diverged", str(row["error"] or ""))
    if row is not None and row["status"] == "failed":
        log = paths.log_file(results, cell.cell_id)
        logs = [str(log)] if log.exists() else []
        logs += [job[k] for k in ("stderr", "stdout") if job.get(k) and Path(job[k]).exists()]
        where = f" (log: {', '.join(logs)})" if logs else ""
        return state("failed", f"{row['error']}{where}")
    if paths.checkpoint_path(results, cell.cell_id).exists():
        return state("paused", f"checkpoint {paths.checkpoint_path(results, cell.cell_id)}")
    if job:
        return state("queued", f"task {job.get('job_id', '?')}")
    return state("pending")


def suite_status(cells: tuple[Cell, ...], results: Path) -> list[CellState]:
    jobs = cluster_jobs(results)
    return [cell_state(results, cell, jobs) for cell in cells]


def summary_line(states: list[CellState]) -> str:
    counts = Counter(s.state for s in states)
    return ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]) or "no cells"


def print_status(
    suite: Path, overrides: Sequence[str], results: Path | None, only: str | None
) -> None:
    """`harness status`: one line per cell (a note first when there is no results folder)."""
    loaded = load_suite(suite, overrides=overrides)
    cells = select_some(loaded, only)
    folder = results or default_folder(loaded.name)
    if not folder.is_dir():
        print(
            f"note: {folder}: no such results folder yet, so every cell is pending; "
            f"`harness run {suite} --results {folder}` writes it",
            file=sys.stderr,
        )
    states = suite_status(cells, folder)
    # A detail is read from the folder (a row's error, a claim's holder, a task's log path),
    # which anyone sharing it may have written: printable, never raw, on a terminal.
    rows = [(s.cell_id, s.label, s.state, printable(s.detail)) for s in states]
    print(tabulate(rows, headers=["cell", "label", "state", "detail"], tablefmt="simple"))
    print(f"{loaded.name}: {summary_line(states)}")
