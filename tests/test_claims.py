"""The claims table (harness.analysis.claims): pre-registered paired tests and their verdicts,
as the rules in docs/paper.md state them, and through `harness report SUITE FOLDER`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.claims import (
    CONTRADICTED,
    NOT_MEASURED,
    NOT_SHOWN,
    SUPPORTED,
    claims_table,
    measure,
    tost_power,
)
from harness.config.schema import ClaimSpec, PreregistrationSpec
from tests.conftest import run_cli


def _pre(test: str = "equivalent", seeds: int = 4) -> PreregistrationSpec:
    claim = ClaimSpec(
        id="c", section="Sec 5.1", paper="the same", test=test,  # type: ignore[arg-type]
        optimizer="momentum", schedule="increasing_batch", versus="decaying_lr",
    )  # fmt: skip
    return PreregistrationSpec(
        margin=0.01, margin_reason="r", seeds=tuple(range(seeds)), planning_sd=0.01,
        power=0.8, claims=(claim,),
    )  # fmt: skip


def _runs(ref: list[float], arm: list[float]) -> pd.DataFrame:
    rows = []
    for schedule, accs, updates in (("decaying_lr", ref, 100), ("increasing_batch", arm, 40)):
        for seed, acc in enumerate(accs):
            rows.append(
                {"cell_id": f"{schedule}{seed}", "optimizer": "momentum", "schedule": schedule,
                 "status": "ok", "seed": seed, "final_test_acc": acc, "updates": updates}
            )  # fmt: skip
    return pd.DataFrame(rows)


REF = [0.700, 0.710, 0.690, 0.705]


def test_equivalent_supported_when_the_interval_is_inside_the_margin() -> None:
    result = measure(_pre().claims[0], _runs(REF, [a + 0.001 for a in REF]), _pre())
    assert result.verdict == SUPPORTED
    assert result.mean_pp == pytest.approx(0.1) and result.pairs == 4
    assert (result.updates, result.updates_versus) == (40, 100)


def test_a_consistent_gap_beyond_the_margin_is_contradicted_and_excludes_zero() -> None:
    arm = [a - d for a, d in zip(REF, (0.020, 0.021, 0.019, 0.020), strict=True)]
    result = measure(_pre().claims[0], _runs(REF, arm), _pre())
    assert result.verdict == CONTRADICTED
    assert result.high_pp < -1.0 and result.excludes_zero


def test_a_noisy_difference_is_not_shown() -> None:
    arm = [a + d for a, d in zip(REF, (0.02, -0.02, 0.015, -0.01), strict=True)]
    assert measure(_pre().claims[0], _runs(REF, arm), _pre()).verdict == NOT_SHOWN


def test_lower_is_supported_by_an_interval_below_zero_only() -> None:
    pre = _pre("lower")
    below = [a - d for a, d in zip(REF, (0.004, 0.005, 0.006, 0.005), strict=True)]
    assert measure(pre.claims[0], _runs(REF, below), pre).verdict == SUPPORTED
    above = [a + d for a, d in zip(REF, (0.004, 0.005, 0.006, 0.005), strict=True)]
    assert measure(pre.claims[0], _runs(REF, above), pre).verdict == CONTRADICTED


def test_fewer_pairs_than_preregistered_is_pending_and_none_is_not_measured() -> None:
    pre = _pre(seeds=6)
    result = measure(pre.claims[0], _runs(REF, REF), pre)
    assert result.verdict == "pending (4 of 6 seeds)"
    assert math.isfinite(result.low_pp)  # the interim numbers are shown
    empty = _runs([], [])
    assert claims_table(empty, pre)[0].verdict == NOT_MEASURED


def test_seeds_outside_the_preregistration_and_failed_cells_do_not_count() -> None:
    runs = _runs([*REF, 0.1], [*REF, 0.9])  # seed 4 is not pre-registered
    runs.loc[runs["cell_id"] == "increasing_batch0", "status"] = "failed"
    result = measure(_pre().claims[0], runs, _pre())
    assert result.pairs == 3


def test_power_grows_with_pairs_and_is_one_without_spread() -> None:
    assert tost_power(1.0, 10, 1.0, 0.05) == pytest.approx(0.79, abs=0.03)  # docs/paper.md
    assert tost_power(1.0, 6, 1.0, 0.05) < tost_power(1.0, 10, 1.0, 0.05)
    assert tost_power(0.0, 3, 1.0, 0.05) == 1.0


TINY = """
name: tinyclaims
dataset: {name: cifar10, train_size: 256, test_size: 200, augment: false}
models:
  small_cnn: {name: small_cnn, width: 4}
optimizers:
  momentum: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, shape: step, milestones: [1], factor: 4, batch_size: 32}
schedules:
  decaying_lr: {realization: lr}
  increasing_batch: {realization: batch}
training: {ghost_batch_size: 32}
experiments:
  - {name: e, optimizers: [momentum], schedules: [decaying_lr, increasing_batch],
     seeds: [0, 1, 2]}
report:
  preregistration:
    margin: 0.05
    margin_reason: a test
    seeds: [0, 1, 2]
    planning_sd: 0.01
    power: 0.8
    claims:
      - {id: batch, primary: true, section: Sec 5.1, paper: equivalent accuracy, test: equivalent,
         optimizer: momentum, schedule: increasing_batch, versus: decaying_lr}
"""


@pytest.mark.slow
def test_report_of_a_suite_puts_its_claims_table_first(tmp_path: Path, cifar_root: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    results = tmp_path / "results"
    only = "*/seed[01]"  # two of the three pre-registered seeds: pending
    trained = run_cli(
        "run", str(suite), "--results", str(results), "--device", "cpu", "--only", only
    )
    assert trained.returncode == 0, trained.stderr
    proc = run_cli("report", str(suite), str(results))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.index("The paper's claims: suite tinyclaims") < text.index("Summary")
    (line,) = [x for x in text.splitlines() if x.startswith("| batch (primary)")]
    assert "pending (2 of 3 seeds)" in line and "2 of 3" in line
    assert "16 vs 14" not in line and "vs" in line  # both arms' update counts
    bare = run_cli("report", str(results))  # rows alone: no suite, no claims
    assert bare.returncode == 0 and "The paper's claims" not in bare.stdout
    # Another suite that shares these cells (the same configurations, so the same ids) decides
    # its claims on their rows, though they were written under the first suite's name.
    other = tmp_path / "share.yaml"
    other.write_text(TINY.replace("name: tinyclaims", "name: tinyshare"))
    shared = run_cli("report", str(other), str(results))
    assert shared.returncode == 0, shared.stderr
    (line,) = [x for x in shared.stdout.splitlines() if x.startswith("| batch (primary)")]
    assert "pending (2 of 3 seeds)" in line
