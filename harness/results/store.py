"""Results on disk: Parquet rows, one file per cell, written atomically.

Layout of a results folder (default ``results/<suite>``)::

    runs/<cell_id>.parquet      one row per finished cell   pandas.read_parquet(DIR / "runs")
    curves/<cell_id>.parquet    one row per cell and epoch  pandas.read_parquet(DIR / "curves")
    checkpoints/<cell_id>.pt    resume state of an unfinished cell (deleted when it finishes)

One file per cell means concurrent runners on one folder never write the same file, and two
results folders merge by copying files. Every file is written to a temporary name in the same
folder and renamed into place, so a reader never sees half a file.

``SCHEMA_VERSION`` is stored in every row; ``read_runs`` / ``read_curves`` migrate older rows.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import UserError
from harness.fsio import atomic_path

SCHEMA_VERSION = 1

RUN_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "suite": pa.string(),
    "experiment": pa.string(),
    "aliases": pa.list_(pa.string()),  # other experiment/optimizer/schedule/seed names
    "cell_id": pa.string(),
    "model": pa.string(),
    "dataset": pa.string(),
    "data_source": pa.string(),  # official | jpeg-derived | unverified | synthetic
    "train_size": pa.int64(),
    "optimizer": pa.string(),  # the suite's name for the optimizer recipe
    "optimizer_kind": pa.string(),  # sgd | momentum | nesterov | adam
    "schedule": pa.string(),  # the suite's name for the schedule
    "realization": pa.string(),  # lr | batch | hybrid
    "milestones": pa.list_(pa.int64()),
    "seed": pa.int64(),
    "status": pa.string(),  # ok | diverged | failed
    "error": pa.string(),
    "epochs": pa.int64(),  # epochs trained
    "planned_epochs": pa.int64(),
    "updates": pa.int64(),  # optimizer steps taken
    "planned_updates": pa.int64(),
    "final_test_acc": pa.float64(),  # fraction in [0, 1]
    "best_test_acc": pa.float64(),
    "final_test_loss": pa.float64(),
    "final_train_loss": pa.float64(),  # mean over the last epoch's steps
    "wall_clock_s": pa.float64(),  # whole cell, resumed segments added up
    "train_time_s": pa.float64(),
    "eval_time_s": pa.float64(),
    "overhead_time_s": pa.float64(),  # wall clock less train and eval
    "warmup_time_s": pa.float64(),  # untimed warm-up / compile, outside train_time_s
    "images_per_s": pa.float64(),  # training images over train_time_s
    "updates_per_s": pa.float64(),
    "peak_memory_bytes": pa.int64(),  # device memory; host max RSS on the CPU
    "device": pa.string(),  # cpu | cuda
    "device_name": pa.string(),  # e.g. "NVIDIA H100 80GB HBM3", or the CPU model
    "precision": pa.string(),
    "hostname": pa.string(),
    "python_version": pa.string(),
    "torch_version": pa.string(),
    "harness_version": pa.string(),
    "git_commit": pa.string(),
    "git_dirty": pa.bool_(),
    "config": pa.string(),  # the resolved cell configuration, JSON
    "plan": pa.string(),  # the planned phases, JSON
    "paper_test_acc": pa.float64(),
    "paper_updates": pa.string(),  # the paper's own words, e.g. "under 6500"
    "paper_source": pa.string(),
    "started_at": pa.timestamp("us", tz="UTC"),
    "finished_at": pa.timestamp("us", tz="UTC"),
}

CURVE_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "suite": pa.string(),
    "cell_id": pa.string(),
    "epoch": pa.int64(),  # epochs completed: 1 .. epochs
    "updates": pa.int64(),  # optimizer steps completed at the end of this epoch
    "lr": pa.float64(),
    "batch_size": pa.int64(),
    "momentum": pa.float64(),
    "noise_scale": pa.float64(),
    "train_loss": pa.float64(),  # mean over this epoch's steps
    "test_loss": pa.float64(),  # NaN on epochs without evaluation
    "test_acc": pa.float64(),  # fraction; NaN on epochs without evaluation
    "epoch_time_s": pa.float64(),  # training time of this epoch (synchronized)
    "eval_time_s": pa.float64(),
    "images_per_s": pa.float64(),
}

RUN_SCHEMA = pa.schema(list(RUN_COLUMNS.items()))
CURVE_SCHEMA = pa.schema(list(CURVE_COLUMNS.items()))


def runs_dir(results: Path) -> Path:
    return results / "runs"


def curves_dir(results: Path) -> Path:
    return results / "curves"


def checkpoint_path(results: Path, cell_id: str) -> Path:
    return results / "checkpoints" / f"{cell_id}.pt"


def cell_status(results: Path, cell_id: str) -> str | None:
    """The status in a cell's run row, or None if it has none yet."""
    path = runs_dir(results) / f"{cell_id}.parquet"
    if not path.exists():
        return None
    return str(pq.ParquetFile(path).read(columns=["status"]).column("status")[0])


def lock_path(results: Path, cell_id: str) -> Path:
    return results / "checkpoints" / f"{cell_id}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def claim(results: Path, cell_id: str) -> Iterator[bool]:
    """Claim a cell for this process while the block runs; yields False if another has it.

    The claim is a lock file created exclusively, holding "host pid". A lock left by a
    process that no longer runs on this host (a killed runner) is stale and taken over; a
    lock from another host is respected, since its process cannot be checked from here
    (delete the file if that runner is gone).
    """
    path = lock_path(results, cell_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = path.read_text().split()
            except (OSError, ValueError):
                host, pid = socket.gethostname(), "0"  # half-written: its writer died
            if host != socket.gethostname() or _alive(int(pid)):
                yield False
                return
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        try:
            yield True
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return
    yield False  # lost a race for a stale lock to another runner


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    unknown = set().union(*(r.keys() for r in rows)) - set(schema.names) if rows else set()
    if unknown:
        raise ValueError(f"columns not in the schema: {sorted(unknown)}")
    columns = {
        name: pa.array([r.get(name) for r in rows], type=schema.field(name).type)
        for name in schema.names
    }
    return pa.table(columns, schema=schema)


def write_cell(results: Path, run: Mapping[str, Any], curves: Sequence[Mapping[str, Any]]) -> None:
    """Write one finished cell: curves first, then the run row that marks it done."""
    cell_id = str(run["cell_id"])
    run = {"schema_version": SCHEMA_VERSION, **run}
    curves = [{"schema_version": SCHEMA_VERSION, **c} for c in curves]
    with atomic_path(curves_dir(results) / f"{cell_id}.parquet") as tmp:
        pq.write_table(_table(curves, CURVE_SCHEMA), tmp)
    with atomic_path(runs_dir(results) / f"{cell_id}.parquet") as tmp:
        pq.write_table(_table([run], RUN_SCHEMA), tmp)


def _read(folder: Path, schema: pa.Schema) -> pd.DataFrame:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return schema.empty_table().to_pandas()
    tables = [_migrate(pq.ParquetFile(f).read(), schema) for f in files]
    return pa.concat_tables(tables).to_pandas()


def _migrate(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Bring a table written by an older schema version up to `schema` (missing columns null)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = {}
    for name in schema.names:
        kind = schema.field(name).type
        if name in table.column_names:
            columns[name] = table.column(name).cast(kind)
        else:
            columns[name] = pa.nulls(table.num_rows, type=kind)
    return pa.table(columns, schema=schema)


def read_runs(results: Path | str) -> pd.DataFrame:
    """Every run row under `results` (a results folder), as a DataFrame."""
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"{results}: no such results folder; run `harness run SUITE` first")
    return _read(runs_dir(results), RUN_SCHEMA)


def read_curves(results: Path | str) -> pd.DataFrame:
    results = Path(results)
    if not results.is_dir():
        raise UserError(f"{results}: no such results folder; run `harness run SUITE` first")
    return _read(curves_dir(results), CURVE_SCHEMA)
