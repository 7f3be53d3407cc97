"""Results on disk: Parquet rows, one file per cell, written atomically, read defensively.

Layout of a results folder (default ``results/<suite>``)::

    runs/<cell_id>.parquet      one row per finished cell   pandas.read_parquet(DIR / "runs")
    curves/<cell_id>.parquet    one row per cell and epoch  pandas.read_parquet(DIR / "curves")
    checkpoints/<cell_id>.pt    resume state of an unfinished cell (deleted when it finishes)
    checkpoints/<cell_id>.lock  who is training the cell (see harness.results.lock)

One file per cell means concurrent runners on one folder never write the same file, and two
results folders merge by copying files. Every file is written to a temporary name in the same
folder and renamed into place, so a reader never sees half a file. A file damaged anyway (a
full disk, a bad copy) is skipped with a `DamagedFileWarning` naming it, never a traceback:
one bad cell must not hide every other cell's results. `quarantine` moves such a file aside.
So is a row file that is a symbolic link (never read: another user of a shared folder may
have pointed it anywhere) or whose name is not valid text. Every write is confined to the
results folder (`harness.fsio.atomic_path(..., inside=results)`): no link is written through.

The columns are the fields of `RunRecord` / `CurveRecord` (harness.results.record), plus
``schema_version`` in every row; ``read_runs`` / ``read_curves`` migrate older rows.
"""

from __future__ import annotations

import datetime as dt
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from harness.errors import UserError
from harness.fsio import atomic_path, printable_name, shown
from harness.results.record import (
    CURVE_SCHEMA,
    RUN_SCHEMA,
    SCHEMA_VERSION,
    CurveRecord,
    RunRecord,
)


class DamagedFileWarning(UserWarning):
    """A results file that could not be read and was skipped; `path` names it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{shown(path)}: not a readable results file ({reason}); skipped")
        self.path = path


class Skipped(NamedTuple):
    """A file that could not be read, and the reader's first line on why."""

    path: Path
    reason: str


class Scan(NamedTuple):
    """The rows of a runs/ or curves/ folder, and the files that could not be read."""

    frame: pd.DataFrame
    skipped: tuple[Skipped, ...]


def runs_dir(results: Path) -> Path:
    return results / "runs"


def curves_dir(results: Path) -> Path:
    return results / "curves"


def run_file(results: Path, cell_id: str) -> Path:
    return runs_dir(results) / f"{cell_id}.parquet"


def curve_file(results: Path, cell_id: str) -> Path:
    return curves_dir(results) / f"{cell_id}.parquet"


def checkpoint_path(results: Path, cell_id: str) -> Path:
    return results / "checkpoints" / f"{cell_id}.pt"


def stale_temporaries(results: Path, cell_id: str) -> list[Path]:
    """The temporary files (`harness.fsio.atomic_path`: ``.<name>.<random>.tmp``) of a cell's
    checkpoint, claim record and rows that a killed writer left behind.

    Only the runner holding the cell's claim writes these files, so a caller that holds the
    claim knows every such file is a dead writer's and may remove it.
    """
    names = [f"{cell_id}.pt", f"{cell_id}.lock"]
    found = [p for n in names for p in (results / "checkpoints").glob(f".{n}.*.tmp")]
    for folder in (runs_dir(results), curves_dir(results)):
        found += folder.glob(f".{cell_id}.parquet.*.tmp")
    return sorted(found)


def cell_status(results: Path, cell_id: str) -> str | None:
    """The status in a cell's run row; None if it has none yet or its run file is unreadable
    (so that the runner trains it again rather than trusting a damaged file)."""
    path = run_file(results, cell_id)
    if not path.exists() or unreadable(path) is not None:
        return None
    try:
        column = pq.ParquetFile(path).read(columns=["status"]).column("status")
    except (pa.ArrowException, OSError, KeyError):
        return None
    return str(column[0]) if len(column) else None


def quarantine(path: Path) -> Path:
    """Move a damaged file aside to ``<name>.corrupt-<UTC time>``, never over another file.

    Returns the new path. The readers' ``*.parquet`` pattern no longer matches it, so the
    cell counts as not finished, and the bytes stay for whoever wants to look at them.
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    path.rename(aside)
    return aside


def _rows(
    records: Iterable[RunRecord | CurveRecord | Mapping[str, Any]], schema: pa.Schema
) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        if isinstance(r, RunRecord | CurveRecord):
            rows.append(r.as_row())
            continue
        unknown = set(r) - set(schema.names)
        if unknown:
            raise ValueError(f"columns not in the schema: {sorted(unknown)}")
        rows.append({"schema_version": SCHEMA_VERSION, **r})
    return rows


def _table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {
        # A NaN read back from a nullable int column (pandas has no int null) is written as
        # null again; float columns keep their NaNs.
        name: pa.array(
            [r.get(name) for r in rows],
            type=schema.field(name).type,
            from_pandas=pa.types.is_integer(schema.field(name).type),
        )
        for name in schema.names
    }
    return pa.table(columns, schema=schema)


def write_cell(
    results: Path,
    run: RunRecord | Mapping[str, Any],
    curves: Sequence[CurveRecord | Mapping[str, Any]],
) -> None:
    """Write one finished cell: curves first, then the run row that marks it done.

    Rows may also be mappings whose keys are the record's fields (tests build them so); a key
    outside the schema is a ValueError.
    """
    run_row = _rows([run], RUN_SCHEMA)[0]
    cell_id = str(run_row["cell_id"])
    curve_rows = _rows(curves, CURVE_SCHEMA)
    with atomic_path(curve_file(results, cell_id), inside=results) as tmp:
        pq.write_table(_table(curve_rows, CURVE_SCHEMA), tmp)
    write_run(results, run)


def write_run(results: Path, run: RunRecord | Mapping[str, Any]) -> None:
    """Write a cell's run row alone (a failed cell whose curve file could not be written)."""
    run_row = _rows([run], RUN_SCHEMA)[0]
    with atomic_path(run_file(results, str(run_row["cell_id"])), inside=results) as tmp:
        pq.write_table(_table([run_row], RUN_SCHEMA), tmp)


def unreadable(path: Path) -> str | None:
    """Why a row file is skipped before it is opened: a link, not a regular file (a FIFO
    would block the reader), or a name that is not text; None if it may be read."""
    if not printable_name(path):
        return "its file name is not valid UTF-8"
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if stat.S_ISLNK(mode):
        return "a symbolic link, never read: the results folder's files must be its own"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _scan(folder: Path, schema: pa.Schema) -> Scan:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    readable, skipped = [], []
    for f in files:
        why = unreadable(f)
        if why is None:
            readable.append(f)
        else:
            skipped.append(Skipped(f, why))
    if not readable:
        return Scan(schema.empty_table().to_pandas(), tuple(skipped))
    table = _read_together(readable, schema)
    if table is None:  # some file is damaged (or of another shape): each alone, as it reads
        tables = []
        for f in readable:
            try:
                tables.append(_migrate(pq.ParquetFile(f).read(), schema))
            except (pa.ArrowException, OSError) as err:
                lines = str(err).strip().splitlines()
                skipped.append(Skipped(f, lines[0] if lines else type(err).__name__))
        if not tables:
            return Scan(schema.empty_table().to_pandas(), tuple(skipped))
        table = pa.concat_tables(tables)
    # One chunk per column: a table of 10,000 one-row files converts to pandas chunk by chunk
    # otherwise, most of `harness report`'s time at that size (issue 46).
    return Scan(table.combine_chunks().to_pandas(), tuple(sorted(skipped)))


def _read_together(files: Sequence[Path], schema: pa.Schema) -> pa.Table | None:
    """All of `files` in one pyarrow.dataset read, in their order, each file's columns brought
    to `schema` (a column a file lacks is null, as `_migrate` makes it); None if any file does
    not read or its columns do not cast."""
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
        return dataset.to_table(use_threads=False)
    except (pa.ArrowException, OSError, ValueError):
        return None


def warn_skipped(skipped: Iterable[Skipped]) -> None:
    """One `DamagedFileWarning` per skipped file (Python prints them on stderr)."""
    for path, reason in skipped:
        warnings.warn(DamagedFileWarning(path, reason), stacklevel=3)


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


def missing_folder(path: Path) -> str:
    """Why `path` is no results folder, and the command that writes one there."""
    hint = f"`harness run SUITE --results {path}` writes one (runs/, curves/ in {path} itself)"
    parent = path.parent
    if (parent / "runs").is_dir():
        # `--results DIR` is the suite's folder itself, not a root of suite folders.
        hint = f"{parent} is the results folder (`harness run SUITE --results {parent}` wrote it)"
    return f"{path}: no such results folder; {hint}"


def _folder(results: Path | str) -> Path:
    results = Path(results)
    if not results.is_dir():
        raise UserError(missing_folder(results))
    return results


def suite_folders(root: Path) -> list[Path]:
    """Every results folder directly under `root` (a folder with a runs/ subfolder)."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/runs") if p.is_dir())


def report_folders(paths: Sequence[Path]) -> list[Path]:
    """The results folders that `harness report PATH ...` reads.

    Each PATH is a suite's results folder (what `harness run --results` wrote: runs/ inside)
    or a root holding such folders (results/, or any DIR/<suite>/). `UserError` naming the path
    and the command that writes one when it is neither.
    """
    folders: list[Path] = []
    for path in paths:
        if (path / "runs").is_dir():
            folders.append(path)
            continue
        if not path.is_dir():
            raise UserError(missing_folder(path))
        inner = suite_folders(path)
        if not inner:
            raise UserError(
                f"{path}: no runs/ in it nor in any folder directly under it; "
                f"`harness run SUITE --results {path}` writes rows there"
            )
        folders += inner
    return folders


def scan_runs(results: Path | str) -> Scan:
    """Every readable run row under `results`, and the run files skipped as unreadable."""
    return _scan(runs_dir(_folder(results)), RUN_SCHEMA)


def scan_curves(results: Path | str) -> Scan:
    return _scan(curves_dir(_folder(results)), CURVE_SCHEMA)


def read_runs(results: Path | str) -> pd.DataFrame:
    """Every run row under `results` (a results folder), as a DataFrame.

    Unreadable files are skipped, each with a `DamagedFileWarning`; `scan_runs` returns them.
    """
    frame, skipped = scan_runs(results)
    warn_skipped(skipped)
    return frame


def read_curves(results: Path | str) -> pd.DataFrame:
    frame, skipped = scan_curves(results)
    warn_skipped(skipped)
    return frame
