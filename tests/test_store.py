"""harness.results.store: records in, frames out, and damaged files skipped, never a traceback."""

from __future__ import annotations

import math
import stat
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.fsio import new_file_mode
from harness.results.record import RUN_COLUMNS, SCHEMA_VERSION, RunRecord
from harness.results.store import (
    DamagedFileWarning,
    cell_status,
    curve_file,
    quarantine,
    read_curves,
    read_runs,
    run_file,
    scan_runs,
    write_cell,
)
from tests.fakes import FakeExperiment, write_fake_results

ONE = [FakeExperiment("e", ("momentum",), ("decaying_lr", "hybrid"), seeds=(0,))]


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[str]]:
    rows = write_fake_results(tmp_path, ONE, epochs=4, milestones=(2,))
    return tmp_path, [r["cell_id"] for r in rows]


def test_records_round_trip_through_the_schema(folder: tuple[Path, list[str]]) -> None:
    root, cells = folder
    runs = read_runs(root)
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert sorted(runs["cell_id"]) == sorted(cells)
    assert (runs["schema_version"] == SCHEMA_VERSION).all()
    assert len(read_curves(root)) == 2 * 4
    assert all(cell_status(root, c) == "ok" for c in cells)


def test_mapping_rows_are_checked_against_the_schema(folder: tuple[Path, list[str]]) -> None:
    root, _ = folder
    run = write_fake_results(root / "fresh", ONE, epochs=4, milestones=(2,))[0]
    record = RunRecord(**run)
    curve = read_curves(root).drop(columns="schema_version").iloc[0].to_dict()
    write_cell(root / "again", record, [curve])
    assert read_runs(root / "again")["cell_id"].tolist() == [run["cell_id"]]
    with pytest.raises(ValueError, match="not in the schema: \\['lr_typo'\\]"):
        write_cell(root / "bad", record, [{**curve, "lr_typo": 1.0}])
    with pytest.raises(ValueError, match="not in the schema"):
        write_cell(root / "bad", {**run, "nope": 1}, [curve])


def test_written_files_are_readable_by_the_group(folder: tuple[Path, list[str]]) -> None:
    root, cells = folder
    for path in (run_file(root, cells[0]), curve_file(root, cells[0])):
        assert stat.S_IMODE(path.stat().st_mode) == new_file_mode()


@pytest.mark.parametrize("damage", ["empty", "truncated", "not parquet"])
def test_a_damaged_run_file_is_skipped_with_a_warning(
    folder: tuple[Path, list[str]], damage: str
) -> None:
    root, cells = folder
    bad = run_file(root, cells[0])
    data = bad.read_bytes()
    bad.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "not parquet": b"x" * 99}[damage]
    )
    with pytest.warns(DamagedFileWarning, match=str(bad)) as caught:
        runs = read_runs(root)
    assert runs["cell_id"].tolist() == [cells[1]]  # the other cell is still there
    assert [w.message.path for w in caught.list] == [bad]  # type: ignore[union-attr]
    assert scan_runs(root).skipped[0].path == bad
    assert cell_status(root, cells[0]) is None  # the runner will train it again
    assert cell_status(root, cells[1]) == "ok"


def test_a_damaged_curve_file_is_skipped_with_a_warning(folder: tuple[Path, list[str]]) -> None:
    root, cells = folder
    curve_file(root, cells[1]).write_bytes(b"")
    with pytest.warns(DamagedFileWarning, match=cells[1]):
        curves = read_curves(root)
    assert set(curves["cell_id"]) == {cells[0]}


def test_quarantine_moves_a_file_aside_and_keeps_its_bytes(folder: tuple[Path, list[str]]) -> None:
    root, cells = folder
    bad = run_file(root, cells[0])
    bad.write_bytes(b"PAR1 half")
    first = quarantine(bad)
    bad.write_bytes(b"PAR1 again")
    second = quarantine(bad)
    assert not bad.exists() and first != second
    assert first.read_bytes() == b"PAR1 half" and second.read_bytes() == b"PAR1 again"
    assert first.name.startswith(f"{cells[0]}.parquet.corrupt-")
    assert read_runs(root)["cell_id"].tolist() == [cells[1]]  # no warning: it is aside now
    assert cell_status(root, cells[0]) is None


def test_older_rows_are_migrated(folder: tuple[Path, list[str]]) -> None:
    """A row written before the optional columns that came later reads with them null."""
    root, cells = folder
    path = run_file(root, cells[0])
    later = ["sweep_metric", "sweep_target", "equivalence_margin", "model_source"]
    pq.write_table(pq.read_table(path).drop_columns(later), path)
    frame = read_runs(root)
    assert list(frame.columns) == list(RUN_COLUMNS)
    runs = frame.set_index("cell_id")
    assert runs.loc[cells[0], ["sweep_metric", "model_source"]].isna().all()
    assert math.isnan(runs.loc[cells[0], "sweep_target"])


def test_a_row_missing_a_required_column_is_skipped_not_migrated(tmp_path: Path) -> None:
    """A foreign row (no suite, experiment, seed ...) is no row of this harness (issue 39.1)."""
    (tmp_path / "runs").mkdir()
    pd.DataFrame({"cell_id": ["abc"], "status": ["ok"], "final_test_acc": [0.9]}).to_parquet(
        tmp_path / "runs" / "abc.parquet"
    )
    with pytest.warns(DamagedFileWarning, match="no suite in a row"):
        assert read_runs(tmp_path).empty
    assert cell_status(tmp_path, "abc") is None
