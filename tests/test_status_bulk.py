"""`harness status` reads a suite's run rows in one pass (issue 46, item 6): the states are the
ones the per-cell reads gave, damaged files and links included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import harness.app.status as status
from harness.app.status import cell_state, cluster_jobs, suite_status
from harness.config.suite import load_suite
from harness.results import store
from tests.benchmarks.big_suite import write_big_results, write_big_suite


def test_one_pass_gives_the_per_cell_states(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    suite = write_big_suite(tmp_path, seeds=2)  # 24 cells
    results = tmp_path / "results" / "big"
    assert write_big_results(suite, results) == 24
    cells = load_suite(suite).cells
    ids = [c.cell_id for c in cells]
    with pytest.MonkeyPatch.context() as m:  # no read per cell: one pass for the folder
        m.setattr(status, "_run_row", lambda *_: pytest.fail("a run file read alone"))
        assert [s.state for s in suite_status(cells, results)] == ["done"] * 24
    damaged, linked, paused, failed = (store.run_file(results, i) for i in ids[:4])
    damaged.write_bytes(b"PAR1 not parquet")
    target = tmp_path / "elsewhere.parquet"
    target.write_bytes(linked.read_bytes())
    linked.unlink()
    linked.symlink_to(target)
    paused.unlink()
    store.checkpoint_path(results, ids[2]).parent.mkdir(exist_ok=True)
    store.checkpoint_path(results, ids[2]).write_bytes(b"")
    table = pq.read_table(failed).to_pylist()
    table[0].update(status="failed", error="boom")
    store.write_run(results, {k: v for k, v in table[0].items() if k != "schema_version"})

    bulk = suite_status(cells, results)
    jobs = cluster_jobs(results)
    assert bulk == [cell_state(results, c, jobs) for c in cells]
    states = [s.state for s in bulk]
    assert states[:4] == ["pending", "pending", "paused", "failed"]
    assert states[4:] == ["done"] * 20

    shown = cli("status", str(suite), "--results", str(results))
    assert shown.returncode == 0, shown.stderr
    assert "big: 20 done, 1 failed, 1 paused, 2 pending" in shown.stdout
