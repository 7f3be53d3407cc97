"""Speed of the commands that grow with the suite, at 9,996 cells (issue 46, item 6):
`harness plan` (rendered, and --json), `harness status` and `harness report` (with and
without figures) on a results folder with one run file and one curve file per cell, as
`harness run` writes it.

Run with ``HARNESS_BENCH_10K=1 pytest tests/benchmarks/test_bench_10k.py --benchmark-only`` on a
quiet machine (building the folder takes a few minutes). The issue measured, before any
change: plan 25 s (97 % drawing rich tables, about 2.5 ms a cell), plan --json 1.5 s, status
10.8 s (one Parquet read a cell), report 27 s and 1.36 GB. The aim: plan in about a second,
status and report in seconds with bounded memory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from harness.analysis.document import build_report
from harness.app.plan import plan_json, print_plan
from harness.app.status import suite_status
from harness.config.suite import load_suite
from tests.benchmarks.big_suite import SEEDS, write_big_results, write_big_suite

CELLS = SEEDS * 12
# Building the folder writes 20,000 files (minutes on a quiet machine, far more on a loaded
# one): run on purpose, never as part of the test command's once-through of the benchmarks.
pytestmark = pytest.mark.skipif(
    os.environ.get("HARNESS_BENCH_10K") != "1", reason="set HARNESS_BENCH_10K=1 to build 10k cells"
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("big10k")
    suite = write_big_suite(root)
    results = root / "results" / "big"
    assert write_big_results(suite, results) == CELLS
    return suite, results


def _plan_text(suite_path: Path) -> str:
    suite = load_suite(suite_path)
    out = io.StringIO()
    print_plan(suite, suite.cells, Console(file=out, width=120))
    return out.getvalue()


def test_bench_plan_10k_rendered(benchmark, big: tuple[Path, Path]) -> None:
    text = benchmark.pedantic(_plan_text, args=(big[0],), rounds=1, iterations=1)
    assert text.count("big/") >= 12  # one table per recipe, its seeds and cells in the title


def test_bench_plan_10k_json(benchmark, big: tuple[Path, Path]) -> None:
    def plan() -> dict:
        suite = load_suite(big[0])
        return plan_json(suite, suite.cells)

    out = benchmark.pedantic(plan, rounds=1, iterations=1)
    assert len(out["cells"]) == CELLS


def test_bench_status_10k(benchmark, big: tuple[Path, Path]) -> None:
    cells = load_suite(big[0]).cells
    states = benchmark.pedantic(suite_status, args=(cells, big[1]), rounds=1, iterations=1)
    assert [s.state for s in states] == ["done"] * CELLS


def test_bench_report_10k_markdown(benchmark, big: tuple[Path, Path]) -> None:
    text = benchmark.pedantic(build_report, args=([big[1]],), rounds=1, iterations=1)
    assert f"{CELLS} cells" in text


@pytest.mark.skipif(
    os.environ.get("HARNESS_BENCH_FIGURES") != "1", reason="set HARNESS_BENCH_FIGURES=1"
)
def test_bench_report_10k_with_figures(benchmark, big: tuple[Path, Path], tmp_path: Path) -> None:
    text = benchmark.pedantic(
        build_report, args=([big[1]],), kwargs={"figures_dir": tmp_path}, rounds=1, iterations=1
    )
    assert "Figures" in text
