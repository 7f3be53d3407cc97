"""The results folder read in one pass (issue 46, item 6): the same DataFrames, row for row and
bit for bit, as the file-by-file read, and the same report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import harness.results.store as store
from harness.analysis.report import build_report
from tests.fakes import FakeExperiment, write_fake_results


def _file_by_file(m: pytest.MonkeyPatch) -> None:
    m.setattr(store, "_read_together", lambda files, schema: None)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "cifar"
    experiments = [
        FakeExperiment("a", ("momentum", "sgd"), ("decaying_lr", "increasing_batch"), (0, 1))
    ]
    write_fake_results(root, experiments, epochs=6, milestones=(2, 4))
    # One run file of an older schema: columns missing (null after the read).
    old = next(iter(sorted((root / "runs").glob("*.parquet"))))
    table = pq.read_table(old)
    pq.write_table(table.drop_columns(["model_dirty", "equivalence_margin"]), old)
    return root


def test_one_read_gives_the_file_by_file_frames(folder: Path) -> None:
    together = (store.read_runs(folder), store.read_curves(folder))
    with pytest.MonkeyPatch.context() as m:
        _file_by_file(m)
        alone = (store.read_runs(folder), store.read_curves(folder))
    for new, old in zip(together, alone, strict=True):
        assert len(new) > 0
        pd.testing.assert_frame_equal(new, old, check_exact=True)


def test_one_read_is_used_and_the_report_is_unchanged(folder: Path) -> None:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pq, "ParquetFile", lambda *_: pytest.fail("a row file read alone"))
        together = build_report([folder])
    with pytest.MonkeyPatch.context() as m:
        _file_by_file(m)
        alone = build_report([folder])
    assert together == alone


def test_a_damaged_file_is_still_skipped_alone(folder: Path) -> None:
    bad = next(iter(sorted((folder / "curves").glob("*.parquet"))))
    bad.write_bytes(b"PAR1 not parquet")
    scan = store.scan_curves(folder)
    assert [s.path for s in scan.skipped] == [bad]
    assert bad.stem not in set(scan.frame["cell_id"]) and len(scan.frame) > 0
