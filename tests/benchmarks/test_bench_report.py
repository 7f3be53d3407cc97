"""Speed of `build_report` (markdown, no figures) over ~3000 cells with 20 epochs each.

Run with ``pytest tests/benchmarks --benchmark-only``. The fake folder holds its 3024 run rows
and 60480 curve rows in one Parquet file per cell and table, as the runner writes them (the
store reads no other layout: a row file holds the rows of the cell it is named for), so this
measures the report (load, alias expansion, summary, equivalence, rendering) including the
cost of opening 6000 per-cell files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.document import build_report
from tests.fakes import FakeExperiment, write_fake_results

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("decaying_lr", "hybrid", "increasing_batch")
EXPERIMENTS = 84  # x 4 optimizers x 3 schedules x 3 seeds = 3024 cells
# The test command's once-through (--benchmark-disable, as CI runs it) only checks that the
# benchmark still works: 2 experiments (72 cells) instead of 84, since writing and reading
# 3024 cells took 19 minutes of CI's test time on two loaded cores.
ONCE_THROUGH = 2


@pytest.fixture(scope="module")
def experiments(request: pytest.FixtureRequest) -> int:
    return ONCE_THROUGH if request.config.getoption("benchmark_disable") else EXPERIMENTS


@pytest.fixture(scope="module")
def big_results(tmp_path_factory: pytest.TempPathFactory, experiments: int) -> Path:
    root = tmp_path_factory.mktemp("big")
    cells = [
        # Distinct seeds per experiment make distinct cells (equal ones would be aliases).
        FakeExperiment(f"exp{i:02d}", OPTIMIZERS, SCHEDULES, seeds=(3 * i, 3 * i + 1, 3 * i + 2))
        for i in range(experiments)
    ]
    rows = write_fake_results(root, cells, epochs=20)
    assert len(rows) == experiments * len(OPTIMIZERS) * len(SCHEDULES) * 3
    return root


def test_bench_build_report_markdown(benchmark, big_results: Path, experiments: int) -> None:
    text = benchmark.pedantic(
        build_report, args=([big_results],), rounds=3, iterations=1, warmup_rounds=1
    )
    # summary rows + verdict rows (one per optimizer) + per-schedule equivalence rows +
    # Appendix A's epochs-lost rows (one per optimizer and schedule)
    assert text.count(f"| exp{experiments - 1:02d} ") == 12 + 4 + 8 + 12
