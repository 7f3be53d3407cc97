"""harness.analysis.gate.compare on fake runs tables: what passes, moves, goes missing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.gate import CheckResult, compare
from harness.errors import UserError
from harness.results.store import read_runs
from tests.fakes import FakeExperiment, write_fake_results

TOLERANCES: dict[str, float | None] = {
    "final_test_acc": 0.01,
    "best_test_acc": None,  # not checked
    "final_train_loss": 0.05,
    "final_test_loss": None,
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("baseline")
    experiments = [
        FakeExperiment("sec5.1", ("sgd", "momentum"), ("decaying_lr", "hybrid"), seeds=(0, 1))
    ]
    write_fake_results(root, experiments, epochs=10, milestones=(3, 6, 8))
    return read_runs(root)


def _cell(runs: pd.DataFrame, i: int = 0) -> tuple[str, str]:
    row = runs.iloc[i]
    label = f"{row['experiment']}/{row['optimizer']}/{row['schedule']}/seed{row['seed']}"
    return str(row["cell_id"]), label


def _set(runs: pd.DataFrame, cell_id: str, column: str, value: object) -> pd.DataFrame:
    out = runs.copy()
    out.loc[out["cell_id"] == cell_id, column] = value
    return out


def _not_ok(result: CheckResult) -> pd.DataFrame:
    return result.rows[result.rows["verdict"] != "ok"]


def test_identical_frames_pass(baseline: pd.DataFrame) -> None:
    result = compare(baseline, baseline.copy(), TOLERANCES)
    assert result.ok
    assert set(result.rows["verdict"]) == {"ok"}
    # per cell: updates, planned_updates, plan, status and the two metrics with a tolerance
    assert result.checked == len(baseline) * 6
    assert set(result.rows["metric"]) == {
        "updates",
        "planned_updates",
        "plan",
        "status",
        "final_test_acc",
        "final_train_loss",
    }
    n = len(baseline)
    # All ok: what was compared within a tolerance (2 metrics per cell), the exact ones counted.
    table = result.table().strip().splitlines()
    assert table[-1] == f"{n} cells, {n * 6} metrics checked, 0 regressions"
    assert sum("| final_test_acc " in line for line in table) == n
    assert f"and {n * 4} exact comparisons" in table[-3]


def test_metric_moved_beyond_tolerance_fails_naming_cell_and_metric(
    baseline: pd.DataFrame,
) -> None:
    cell_id, label = _cell(baseline, 1)
    old = float(baseline.loc[baseline["cell_id"] == cell_id, "final_test_acc"].iloc[0])
    current = _set(baseline, cell_id, "final_test_acc", old - 0.025)
    result = compare(baseline, current, TOLERANCES)
    assert not result.ok
    bad = _not_ok(result)
    assert len(bad) == 1
    row = bad.iloc[0]
    assert (row["cell_id"], row["label"], row["metric"], row["verdict"]) == (
        cell_id,
        label,
        "final_test_acc",
        "moved",
    )
    assert row["delta"] == pytest.approx(-0.025)
    assert row["tolerance"] == 0.01
    table = result.table("github")
    assert cell_id in table and label in table and "final_test_acc" in table
    assert "-0.025" in table
    assert table.rstrip().endswith("1 regressions (1 moved)")


@pytest.mark.parametrize("delta", [0.005, -0.0099, 0.01])
def test_metric_moved_within_tolerance_passes(baseline: pd.DataFrame, delta: float) -> None:
    cell_id, _ = _cell(baseline)
    old = float(baseline.loc[baseline["cell_id"] == cell_id, "final_test_acc"].iloc[0])
    result = compare(baseline, _set(baseline, cell_id, "final_test_acc", old + delta), TOLERANCES)
    assert result.ok, result.table()


def test_metric_without_tolerance_is_not_checked(baseline: pd.DataFrame) -> None:
    cell_id, _ = _cell(baseline)
    current = _set(baseline, cell_id, "best_test_acc", 0.1)
    assert compare(baseline, current, TOLERANCES).ok


def test_nan_metric_on_one_side_moves_on_both_sides_is_equal(baseline: pd.DataFrame) -> None:
    cell_id, _ = _cell(baseline)
    nan_current = _set(baseline, cell_id, "final_test_acc", float("nan"))
    assert not compare(baseline, nan_current, TOLERANCES).ok
    assert compare(nan_current, nan_current.copy(), TOLERANCES).ok


def test_plan_mismatch_fails_and_says_where(baseline: pd.DataFrame) -> None:
    cell_id, _ = _cell(baseline)
    text = baseline.loc[baseline["cell_id"] == cell_id, "plan"].iloc[0]
    plan = json.loads(text)
    plan[-1]["batch_size"] *= 2
    result = compare(baseline, _set(baseline, cell_id, "plan", json.dumps(plan)), TOLERANCES)
    assert not result.ok
    row = _not_ok(result).iloc[0]
    assert row["metric"] == "plan"
    assert "batch_size" in row["delta"]
    # Key order and spacing are not content: a re-serialized plan is the same plan.
    same = json.dumps(json.loads(text), indent=2, sort_keys=True)
    assert compare(baseline, _set(baseline, cell_id, "plan", same), TOLERANCES).ok


def test_update_count_must_match_exactly(baseline: pd.DataFrame) -> None:
    cell_id, _ = _cell(baseline, 2)
    old = int(baseline.loc[baseline["cell_id"] == cell_id, "updates"].iloc[0])
    result = compare(baseline, _set(baseline, cell_id, "updates", old + 1), TOLERANCES)
    assert not result.ok
    row = _not_ok(result).iloc[0]
    assert (row["metric"], row["delta"]) == ("updates", 1)


def test_status_change_fails(baseline: pd.DataFrame) -> None:
    cell_id, _ = _cell(baseline)
    result = compare(baseline, _set(baseline, cell_id, "status", "diverged"), TOLERANCES)
    assert not result.ok
    row = _not_ok(result).iloc[0]
    assert (row["metric"], row["baseline"], row["current"]) == ("status", "ok", "diverged")


def test_missing_and_extra_cells_are_reported_and_fail(baseline: pd.DataFrame) -> None:
    gone, gone_label = _cell(baseline, 0)
    extra = baseline.iloc[[1]].assign(cell_id="feedfacecafe", seed=99)
    current = pd.concat([baseline[baseline["cell_id"] != gone], extra], ignore_index=True)
    result = compare(baseline, current, TOLERANCES)
    assert not result.ok
    bad = _not_ok(result).set_index("verdict")
    assert bad.loc["missing", "cell_id"] == gone and bad.loc["missing", "label"] == gone_label
    assert bad.loc["extra", "cell_id"] == "feedfacecafe"
    assert bad.loc["extra", "label"].endswith("/seed99")
    assert "1 missing, 1 extra" in result.summary()

    only_extra = pd.concat([baseline, extra], ignore_index=True)
    assert not compare(baseline, only_extra, TOLERANCES).ok


def test_unknown_tolerance_is_a_user_error(baseline: pd.DataFrame) -> None:
    with pytest.raises(UserError, match="final_acc"):
        compare(baseline, baseline, {"final_acc": 0.01})


@pytest.mark.parametrize("fmt", ["github", "markdown", "latex", "html", "csv"])
def test_table_renders_in_every_format(baseline: pd.DataFrame, fmt: str) -> None:
    cell_id, _ = _cell(baseline)
    current = _set(baseline, cell_id, "final_train_loss", 9.0)
    text = compare(baseline, current, TOLERANCES).table(fmt)
    assert "final" in text and "1 regressions" in text


def test_compare_reads_store_frames_written_twice(tmp_path: Path) -> None:
    """Two folders written by the same code compare equal: the fakes are deterministic."""
    experiments = [FakeExperiment("e", ("momentum",), ("decaying_lr",), seeds=(0,))]
    write_fake_results(tmp_path / "a", experiments, epochs=5, milestones=(2,))
    write_fake_results(tmp_path / "b", experiments, epochs=5, milestones=(2,))
    assert compare(read_runs(tmp_path / "a"), read_runs(tmp_path / "b"), TOLERANCES).ok


def _recipe(runs: pd.DataFrame, i: int, cell_id: str, lr: float) -> pd.DataFrame:
    """Row i as a cell of another recipe under the same labels: another id, another lr."""
    row = runs.iloc[[i]].copy()
    config = json.loads(row["config"].iloc[0])
    config["optimizer"]["lr"] = lr
    return row.assign(cell_id=cell_id, config=json.dumps(config, sort_keys=True))


def test_a_changed_recipe_fails_naming_the_field_not_as_missing(baseline: pd.DataFrame) -> None:
    gone, label = _cell(baseline, 0)
    lr = json.loads(baseline.iloc[0]["config"])["optimizer"]["lr"]
    changed = _recipe(baseline, 0, "0ddba11c0ffe", 0.2)
    current = pd.concat([baseline[baseline["cell_id"] != gone], changed], ignore_index=True)
    result = compare(baseline, current, TOLERANCES)
    assert not result.ok
    (row,) = _not_ok(result).to_dict("records")
    assert (row["cell_id"], row["label"], row["metric"]) == ("0ddba11c0ffe", label, "recipe")
    assert (row["baseline"], row["current"]) == (f"optimizer.lr {lr}", "optimizer.lr 0.2")
    assert row["verdict"] == "recipe changed" and "(1 recipe changed)" in result.summary()
    assert "regenerate the baseline" in result.table()


def test_a_stale_baseline_row_of_another_recipe_is_noted_not_compared(
    baseline: pd.DataFrame,
) -> None:
    stale = _recipe(baseline, 0, "0ddba11c0ffe", 0.2)
    with_stale = pd.concat([baseline, stale], ignore_index=True)
    result = compare(with_stale, baseline, TOLERANCES)
    assert result.ok, result.table()
    assert result.cells == len(baseline)
    assert "baseline also holds 1 row(s) of other recipes" in result.table()
