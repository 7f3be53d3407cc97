"""`harness status`: where every cell of a suite stands, read from its results folder alone.

A cell is, in this order of evidence:

* **running**: a live runner holds its claim (harness.results.lock; read, never taken);
* **done** / **diverged** / **failed**: its run row says so (failed with its one-line error and
  the log holding the traceback or the Slurm task's output);
* **paused**: a checkpoint and no row (stopped by --stop-after, killed or preempted: the next
  run resumes it);
* **queued**: submitted to a cluster (results/<suite>/slurm/jobs.json) and not started;
* **pending**: nothing yet.

Reading touches nothing: no lock is taken, no damaged file moved (a damaged run file reads as
no row).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tabulate import tabulate

from harness.config.suite import Cell, load_suite, select_some
from harness.results import lock, store

STATES = ("done", "diverged", "failed", "running", "paused", "queued", "pending")
JOBS_FILE = "jobs.json"  # under results/<suite>/slurm/: cell id -> task id and log paths


@dataclass(frozen=True)
class CellState:
    cell_id: str
    label: str
    state: str  # one of STATES
    detail: str = ""  # holder, error, log path, job id


def cluster_jobs(results: Path) -> dict[str, dict[str, str]]:
    """The Slurm (or local) tasks `harness run --executor` submitted, by cell id."""
    path = results / "slurm" / JOBS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def _run_row(results: Path, cell_id: str) -> dict[str, object] | None:
    path = store.run_file(results, cell_id)
    if not path.exists() or store.unreadable(path) is not None:
        return None  # a link or a FIFO there is never read
    try:
        rows = pq.read_table(path, columns=["status", "error"]).to_pylist()
    except (pa.ArrowException, OSError):
        return None
    return rows[-1] if rows else None


def _names(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries}
    except OSError:
        return set()


def run_rows(results: Path, cell_ids: Sequence[str]) -> dict[str, dict[str, object]]:
    """The last run row (status, error) of each of `cell_ids` that has a readable run file.

    One listing of runs/ and one Parquet read of all the files together (pyarrow.dataset), not
    a read per cell: a suite of 10,000 cells took 10.8 s that way (issue 46). A link or a
    non-regular file is never read (`store.unreadable`); if the read as a whole fails (a
    damaged file), each file is read alone and the damaged ones read as no row, as before.
    """
    names = _names(store.runs_dir(results))
    files = [store.run_file(results, c) for c in cell_ids if f"{c}.parquet" in names]
    files = [f for f in files if store.unreadable(f) is None]
    if not files:
        return {}
    rows: dict[str, dict[str, object]] = {}
    by_file = {str(f): f.stem for f in files}
    try:
        dataset = ds.dataset(list(by_file), format="parquet")
        # Files and their rows in order (no threads): a file's last row is its cell's.
        scanner = dataset.scanner(columns=["status", "error"], use_threads=False)
        for tagged in scanner.scan_batches():
            for row in tagged.record_batch.to_pylist():
                rows[by_file[tagged.fragment.path]] = row
    except (pa.ArrowException, OSError, ValueError, KeyError):
        each = {f.stem: _run_row(results, f.stem) for f in files}
        return {cell: row for cell, row in each.items() if row is not None}
    return rows


def cell_state(
    results: Path,
    cell: Cell,
    jobs: dict[str, dict[str, str]],
    rows: dict[str, dict[str, object]] | None = None,
    checkpoints: set[str] | None = None,
) -> CellState:
    """Where `cell` stands. `rows` (`run_rows`) and `checkpoints` (the names in checkpoints/)
    let a whole suite be read at once; without them this cell's files are read."""
    job = jobs.get(cell.cell_id, {})

    def state(name: str, detail: str = "") -> CellState:
        return CellState(cell.cell_id, cell.label, name, detail)

    who = lock.live_holder(results, cell.cell_id)
    if who is not None:
        task = f", task {job['job_id']}" if job.get("job_id") else ""
        return state("running", f"by {who}{task}")
    row = _run_row(results, cell.cell_id) if rows is None else rows.get(cell.cell_id)
    if row is not None and row["status"] in ("ok", "diverged"):
        return state("done" if row["status"] == "ok" else "diverged", str(row["error"] or ""))
    if row is not None and row["status"] == "failed":
        log = results / "logs" / f"{cell.cell_id}.log"
        logs = [str(log)] if log.exists() else []
        logs += [job[k] for k in ("stderr", "stdout") if job.get(k) and Path(job[k]).exists()]
        where = f" (log: {', '.join(logs)})" if logs else ""
        return state("failed", f"{row['error']}{where}")
    checkpoint = store.checkpoint_path(results, cell.cell_id)
    if checkpoint.exists() if checkpoints is None else checkpoint.name in checkpoints:
        return state("paused", f"checkpoint {store.checkpoint_path(results, cell.cell_id)}")
    if job:
        return state("queued", f"task {job.get('job_id', '?')}")
    return state("pending")


def suite_status(cells: tuple[Cell, ...], results: Path) -> list[CellState]:
    jobs = cluster_jobs(results)
    rows = run_rows(results, [c.cell_id for c in cells])
    checkpoints = _names(store.checkpoint_path(results, "x").parent)
    return [cell_state(results, cell, jobs, rows, checkpoints) for cell in cells]


def summary_line(states: list[CellState]) -> str:
    counts = Counter(s.state for s in states)
    return ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]) or "no cells"


def print_status(
    suite: Path, overrides: Sequence[str], results: Path | None, only: str | None
) -> None:
    """`harness status`: one line per cell (a note first when there is no results folder)."""
    loaded = load_suite(suite, overrides=overrides)
    cells = select_some(loaded, only)
    folder = results or Path("results") / loaded.name
    if not folder.is_dir():
        print(
            f"note: {folder}: no such results folder yet, so every cell is pending; "
            f"`harness run {suite} --results {folder}` writes it",
            file=sys.stderr,
        )
    states = suite_status(cells, folder)
    rows = [(s.cell_id, s.label, s.state, s.detail) for s in states]
    print(tabulate(rows, headers=["cell", "label", "state", "detail"], tablefmt="simple"))
    print(f"{loaded.name}: {summary_line(states)}")
