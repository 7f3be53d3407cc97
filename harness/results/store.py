"""Results on disk: Parquet rows, one file per cell, written atomically, read defensively.

The layout of a results folder is `harness.results.paths`'s.

One file per cell means concurrent runners on one folder never write the same file, and two
results folders merge by copying files. Every file is written to a temporary name in the same
folder and renamed into place, so a reader never sees half a file. A file damaged anyway (a
full disk, a bad copy) is skipped with a `DamagedFileWarning` naming it, never a traceback:
one bad cell must not hide every other cell's results. `quarantine` moves such a file aside.
So is a row file that is a symbolic link (never read: another user of a shared folder may
have pointed it anywhere), whose name is not valid text, or that is no row file of the cell
it is named for (`read_rows`, the one rule run, status, report and check read rows by: a
foreign or copied file is no cell's result). Every file is read through
`harness.fsio.read_bytes` and every write is confined to the results folder
(`harness.fsio.atomic_path(..., inside=results)`): no link is read or written through.

The columns are the fields of `RunRecord` / `CurveRecord` (harness.results.record), plus
``schema_version`` in every row; ``read_runs`` / ``read_curves`` migrate older rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.core.metrics import CELL_METRICS
from harness.core.naming import config_id, parse_label
from harness.core.rules import MAX_EPOCHS
from harness.errors import UserError
from harness.fsio import atomic_path, printable_name, read_bytes, shown
from harness.results.paths import checkpoints_dir, curve_file, curves_dir, run_file, runs_dir
from harness.results.record import (
    CURVE_REQUIRED,
    CURVE_SCHEMA,
    RUN_REQUIRED,
    RUN_SCHEMA,
    SCHEMA_VERSION,
    STATUSES,
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


def stale_temporaries(results: Path, cell_id: str) -> list[Path]:
    """The temporary files (`harness.fsio.atomic_path`: ``.<name>.<random>.tmp``) of a cell's
    checkpoint, claim record and rows that a killed writer left behind.

    Only the runner holding the cell's claim writes these files, so a caller that holds the
    claim knows every such file is a dead writer's and may remove it.
    """
    names = [f"{cell_id}.pt", f"{cell_id}.lock"]
    found = [p for n in names for p in checkpoints_dir(results).glob(f".{n}.*.tmp")]
    for folder in (runs_dir(results), curves_dir(results)):
        found += folder.glob(f".{cell_id}.parquet.*.tmp")
    return sorted(found)


def cell_status(results: Path, cell_id: str) -> str | None:
    """The status in a cell's run row; None if it has none yet or its run file is unreadable
    or no row of this cell (`read_rows`), so that the runner trains it again rather than
    trusting a damaged or foreign file."""
    row = run_row(results, cell_id)
    return None if row is None else str(row["status"])


def run_row(results: Path, cell_id: str) -> dict[str, Any] | None:
    """The cell's run row (`read_rows`: the one rule of what a row file is), None if it has
    none or its file is skipped."""
    try:
        table = read_rows(results, run_file(results, cell_id), RUN_SCHEMA)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (pa.ArrowException, OSError, Unfit):
        return None
    return table.to_pylist()[0]


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


# Bounds on what one row file may make the reader hold, checked before its rows are decoded: a
# few KB of Parquet can declare millions of rows or a string repeated millions of times.
MAX_ROW_FILE_BYTES = 64 << 20  # on disk; a curves file of MAX_EPOCHS epochs is a few MB
MAX_ROW_BYTES = 256 << 20  # decoded (every value, strings expanded)
MAX_VALUES = 1_000_000  # per column, list elements counted
MAX_ROWS = {"runs": 1, "curves": MAX_EPOCHS}  # one run row per cell, one curve row per epoch


class Unfit(ValueError):
    """A row file that is no row file of this harness (`read_rows`); the message says why."""


def read_rows(results: Path, path: Path, schema: pa.Schema) -> pa.Table:
    """The rows of the file `path` of `results`' runs/ or curves/, in `schema` (`RUN_SCHEMA`
    or `CURVE_SCHEMA`): the one rule of what a row file is, for run, status, report and check.

    A row file is ``<cell_id>.parquet`` holding that cell's rows and nothing else: one run row,
    or one curve row per epoch. It is read through `harness.fsio.read_bytes` (never through a
    link, never a FIFO or device, at most `MAX_ROW_FILE_BYTES`); its Parquet metadata is
    checked against `MAX_ROWS` and `MAX_VALUES` and its decoded size against `MAX_ROW_BYTES`
    before any value is decoded. Every row must hold a value in each required column of its
    record (`RUN_REQUIRED` / `CURVE_REQUIRED`) and the cell id its file is named for.
    `Unfit` (or the reader's OSError, pyarrow's ArrowException) says why a file is not one.
    """
    if not printable_name(path):
        raise Unfit("its file name is not valid UTF-8")
    data = read_bytes(path, inside=results, limit=MAX_ROW_FILE_BYTES)
    parquet = pq.ParquetFile(pa.BufferReader(data))
    meta = parquet.metadata
    kind = "runs" if schema.equals(RUN_SCHEMA) else "curves"
    limit = MAX_ROWS[kind]
    if meta.num_rows > limit or (kind == "runs" and meta.num_rows != limit):
        rows = "one row" if kind == "runs" else f"at most {limit} rows (one per epoch)"
        raise Unfit(f"{meta.num_rows} rows; a {kind} file holds {rows}")
    strings = []
    declared = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            declared += column.total_uncompressed_size
            if column.num_values > MAX_VALUES:
                raise Unfit(f"{column.num_values} values in {column.path_in_schema}")
            if column.physical_type == "BYTE_ARRAY":
                strings.append(column.path_in_schema)
    if declared > MAX_ROW_BYTES:
        raise Unfit(f"{declared} bytes of values, over {MAX_ROW_BYTES}")
    # Strings stay dictionary-encoded until their expanded size is known to be bounded.
    encoded = pq.ParquetFile(
        pa.BufferReader(data), metadata=meta, read_dictionary=sorted(set(strings))
    ).read()
    size = sum(_decoded_bytes(chunk) for col in encoded.columns for chunk in col.chunks)
    if size > MAX_ROW_BYTES:
        raise Unfit(f"{size} bytes once decoded, over {MAX_ROW_BYTES}")
    table = _migrate(encoded, schema)
    _check_rows(table, path.stem, kind)
    return table


def _decoded_bytes(array: pa.Array) -> int:
    """The bytes `array` takes with every dictionary expanded (bounded arithmetic: nothing is
    expanded to count it)."""
    if isinstance(array, pa.DictionaryArray):
        lengths = pc.binary_length(array.dictionary).take(array.indices)
        return int(pc.sum(lengths).as_py() or 0) + 8 * len(array)
    if isinstance(array, pa.ListArray | pa.LargeListArray):
        return _decoded_bytes(array.values) + 8 * (len(array) + 1)
    return int(array.nbytes)


def _check_rows(table: pa.Table, cell_id: str, kind: str) -> None:
    required = RUN_REQUIRED if kind == "runs" else CURVE_REQUIRED
    for name in required:
        if table.column(name).null_count:
            raise Unfit(f"no {name} in a row: not a row this harness wrote")
    ids = set(table.column("cell_id").to_pylist())
    if ids - {cell_id}:
        other = sorted(str(i) for i in ids - {cell_id})[0]
        raise Unfit(
            f"holds rows of cell {shown(other)}, not of {shown(cell_id)} its name says "
            "(a copied or renamed file)"
        )
    if kind == "runs":
        # The id is the hash of the configuration stored beside it (`config_id`): a row whose
        # id was edited to another cell's (with its file renamed to match) is no row of it.
        try:
            made = config_id(json.loads(table.column("config")[0].as_py()))
        except (TypeError, ValueError, RecursionError):
            raise Unfit("its config is not the JSON of a cell's configuration") from None
        if made != cell_id:
            raise Unfit(
                f"its config hashes to cell {made}, not to {shown(cell_id)} its id says "
                "(an edited row)"
            )
        status = table.column("status")[0].as_py()
        if status not in STATUSES:
            raise Unfit(f"status {status!r}, not one of {', '.join(STATUSES)}")
        for label in table.column("aliases")[0].as_py() or ():
            try:
                parse_label(str(label))
            except ValueError:
                raise Unfit(f"alias {label!r} is not experiment/optimizer/schedule/seedN") from None
        for name in ("epochs", "planned_epochs", "updates", "planned_updates"):
            count = table.column(name)[0].as_py()
            if count is not None and count < 0:
                raise Unfit(f"{name} {count}: a count is never negative")
        for name in (n for n, metric in CELL_METRICS.items() if metric.fraction):
            acc = table.column(name)[0].as_py()
            if acc is not None and not math.isnan(acc) and not 0.0 <= acc <= 1.0:
                raise Unfit(f"{name} {acc}: an accuracy is a fraction in 0..1 (or NaN)")


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


def _scan(results: Path, folder: Path, schema: pa.Schema) -> Scan:
    if folder.is_symlink():  # nothing in it is read (harness.fsio.read_bytes would refuse each)
        reason = "a symbolic link, never read: the results folder's files must be its own"
        return Scan(schema.empty_table().to_pandas(), (Skipped(folder, reason),))
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    tables, skipped = [], []
    for f in files:
        why = unreadable(f)  # said without opening: a link, a FIFO, a name that is no text
        if why is not None:
            skipped.append(Skipped(f, why))
            continue
        try:
            tables.append(read_rows(results, f, schema))
        except (pa.ArrowException, OSError, Unfit) as err:
            lines = str(err).strip().splitlines()
            skipped.append(Skipped(f, lines[0] if lines else type(err).__name__))
    if not tables:
        return Scan(schema.empty_table().to_pandas(), tuple(skipped))
    # One chunk per column: a table of 10,000 one-row files converts to pandas chunk by chunk
    # otherwise, most of `harness report`'s time at that size (issue 46).
    return Scan(pa.concat_tables(tables).combine_chunks().to_pandas(), tuple(skipped))


def warn_skipped(skipped: Iterable[Skipped]) -> None:
    """One `DamagedFileWarning` per skipped file (Python prints them on stderr)."""
    for path, reason in skipped:
        warnings.warn(DamagedFileWarning(path, reason), stacklevel=3)


def _migrate(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Bring a table written by an older schema version up to `schema` (missing columns null)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    have = set(table.column_names)
    for field in schema:
        if field.name not in have:
            table = table.append_column(field.name, pa.nulls(table.num_rows, type=field.type))
    # One cast of the whole table (dictionary-read strings decoded, older types widened): a
    # cast per column cost more than the Parquet read of a run row (issue 46, item 6).
    return table.select(schema.names).cast(schema)


def missing_folder(path: Path) -> str:
    """Why `path` is no results folder, and the command that writes one there."""
    hint = f"`harness run SUITE --results {path}` writes one (runs/, curves/ in {path} itself)"
    parent = path.parent
    if runs_dir(parent).is_dir():
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
        if runs_dir(path).is_dir():
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
    folder = _folder(results)
    return _scan(folder, runs_dir(folder), RUN_SCHEMA)


def scan_curves(results: Path | str) -> Scan:
    folder = _folder(results)
    return _scan(folder, curves_dir(folder), CURVE_SCHEMA)


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
