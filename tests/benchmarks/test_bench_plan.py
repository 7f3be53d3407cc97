"""Speed of planning the paper's suites: YAML → validated cells → phases → JSON.

Run with ``pytest tests/benchmarks --benchmark-only``. This is what `harness plan` does after
its imports, so it must stay far below a second.
"""

from __future__ import annotations

import pytest

from harness.app.plan import plan_json
from harness.config.suite import load_suite
from tests.conftest import SUITES


def _plan(name: str) -> dict:
    suite = load_suite(SUITES / name)
    return plan_json(suite, suite.cells)


@pytest.mark.parametrize("name", ["cifar.yaml", "imagenet.yaml"])
def test_bench_plan_paper_suite(benchmark, name: str) -> None:
    out = benchmark(_plan, name)
    assert out["cells"] and all(c["updates"] > 0 for c in out["cells"])
