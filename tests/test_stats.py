"""The paper's Appendix A estimate (epochs lost per phase) and the equivalence test (TOST)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from harness.analysis.seeds import (
    DIFFERENT,
    EQUIVALENT,
    NOT_SHOWN,
    NOT_TESTED,
    add_verdicts,
    group_verdicts,
    seed_stats,
    seeds_needed,
    tost,
)
from harness.config.suite import load_suite
from harness.core.schedule import epochs_lost
from harness.errors import UserError
from tests.conftest import REPO, run_cli
from tests.test_suite import MINIMAL, write

CIFAR = str(REPO / "suites" / "cifar.yaml")
SEEDS = REPO / "results" / "smoke-seeds"  # committed: 3 seeds of each schedule


# ---------------------------------------------------------------------------------------------
# N_lost = B / (N (1 - m)), Appendix A eq. 12-13, on the Sec 5.2 schedules (N = 50000)


def test_epochs_lost_is_the_appendix_formula():
    # "Original training schedule": B = 128, m = 0.9: 128 / (50000 * 0.1)
    assert epochs_lost(128, 50000, 0.9) == pytest.approx(0.0256)
    # Plain SGD and Adam count m = 0: B / N
    assert epochs_lost(5000, 50000, 0.0) == pytest.approx(0.1)


SEC52 = {  # schedule: N_lost per phase, by hand from Sec 5.2's B0, m, factor 5, B_max 5120
    "decaying_lr": [0.0256] * 4,  # B = 128 throughout, m = 0.9
    "increasing_batch": [0.0256, 0.128, 0.64, 3.2],  # 128, 640, 3200, 16000; m = 0.9
    "increased_lr": [0.128, 0.64, 1.024, 1.024],  # 640, 3200, then B_max 5120
    "increased_momentum": [3.2, 5.12, 5.12, 5.12],  # 3200 / (50000 * 0.02), then 5120
}


def test_plan_json_gives_epochs_lost_per_phase_for_sec52():
    result = run_cli("plan", CIFAR, "--json", "--only", "sec5.2/*/*/seed0")
    assert result.returncode == 0, result.stderr
    cells = json.loads(result.stdout)["cells"]
    assert {c["schedule"] for c in cells} == set(SEC52)
    for cell in cells:
        lost = [p["epochs_lost"] for p in cell["phases"]]
        assert lost == pytest.approx(SEC52[cell["schedule"]]), cell["schedule"]


def test_plan_table_prints_the_epochs_lost_column():
    result = run_cli("plan", CIFAR, "--only", "sec5.2/momentum/increased_momentum/seed0")
    assert result.returncode == 0, result.stderr
    assert "epochs lost" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert [row.split("│")[-1].strip() for row in rows] == ["3.2", "5.12", "5.12", "5.12"]


# ---------------------------------------------------------------------------------------------
# TOST: known inputs


@pytest.mark.parametrize(
    ("mean", "n", "sd", "expected"),
    [
        # 90% CI half-width t(0.95, 9) * 0.001 / sqrt(10) = 0.00058: well inside ±0.005
        (0.0, 10, 0.001, EQUIVALENT),
        (0.004, 10, 0.001, EQUIVALENT),  # 0.0034 .. 0.0046, still inside
        (0.0045, 10, 0.001, NOT_SHOWN),  # 0.0039 .. 0.0051 crosses the margin
        (-0.02, 10, 0.001, DIFFERENT),  # wholly below −0.005
        # Two pairs, dof 1: t(0.95, 1) = 6.31 makes the half-width 0.0089 > the margin
        (0.0, 2, 0.002, NOT_SHOWN),
        (0.02, 2, 0.002, DIFFERENT),
        (0.0, 1, math.nan, NOT_TESTED),  # one pair: no sd
        (math.nan, 2, 0.002, NOT_TESTED),  # no final accuracy
    ],
)
def test_paired_tost_verdicts_on_known_inputs(mean, n, sd, expected):
    low, high, verdict = tost(mean, n, sd, margin=0.005)
    assert verdict == expected
    if expected != NOT_TESTED:
        half = sps.t.ppf(0.95, n - 1) * sd / math.sqrt(n)
        assert (low, high) == pytest.approx((mean - half, mean + half))


def test_paired_tost_agrees_with_scipys_two_one_sided_paired_t_tests():
    """Equivalent exactly when both of scipy's one-sided one-sample t-tests of the per-seed
    differences reject at 5%; different exactly when one beyond the margin does."""
    rng = np.random.default_rng(0)
    margin = 0.005
    for shift in (0.0, 0.002, 0.004, 0.006, 0.012):
        b = 0.9 + rng.normal(0, 0.003, size=6)
        a = b + shift + rng.normal(0, 0.002, size=6)  # paired: a seed moves both arms
        d = a - b
        _, _, verdict = tost(d.mean(), 6, d.std(ddof=1), margin)
        above = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
        below = sps.ttest_1samp(d, margin, alternative="less").pvalue
        assert (verdict == EQUIVALENT) == (max(above, below) < 0.05), shift
        beyond = min(
            sps.ttest_1samp(d, margin, alternative="greater").pvalue,
            sps.ttest_1samp(d, -margin, alternative="less").pvalue,
        )
        assert (verdict == DIFFERENT) == (beyond < 0.05), shift


def test_seeds_needed_is_the_smallest_n_of_the_paired_planning_rule():
    def rule(n, std, margin):  # n >= s² (t(0.95, n-1) + t(0.9, n-1))² / margin²
        q = sps.t.ppf(0.95, n - 1) + sps.t.ppf(0.9, n - 1)
        return n >= std**2 * q**2 / margin**2

    for std in (0.0005, 0.0036, 0.0159):
        n = int(seeds_needed(std, 0.005))
        assert rule(n, std, 0.005) and (n == 2 or not rule(n - 1, std, 0.005))
    assert seeds_needed(0.01, 0.01) == 11  # docs/paper.md's simulation: 0.80 at 10, 0.85 at 11
    assert math.isnan(seeds_needed(math.nan, 0.005))
    assert seeds_needed(0.0, 0.005) == 2


def test_add_verdicts_uses_the_groups_margin_and_the_pairs():
    group = ["suite", "experiment", "optimizer", "model"]
    one = dict.fromkeys(group, "x")
    runs = pd.DataFrame(
        {
            **{k: [v] * 6 for k, v in one.items()},
            "schedule": ["ref"] * 3 + ["new"] * 3,
            "final_test_acc": [0.900, 0.902, 0.904, 0.901, 0.903, 0.905],
        }
    )
    stats = seed_stats(runs, [*group, "schedule"])
    eq = pd.DataFrame({**{k: [v] for k, v in one.items()}, "schedule": ["new"],
                       "reference": ["ref"]})  # fmt: skip

    def margin(m):
        return pd.DataFrame({**{k: [v] for k, v in one.items()}, "margin": [m]})

    # Three pairs, each new − ref = 0.001 ± 0.0005: half-width t(0.95, 2) * 0.0005 / sqrt(3)
    pairs = pd.DataFrame(
        {**{k: [v] for k, v in one.items()}, "schedule": ["new"], "pairs": [3],
         "d_mean": [0.001], "d_sd": [0.0005]}
    )  # fmt: skip
    half = sps.t.ppf(0.95, 2) * 0.0005 / math.sqrt(3)  # 0.00084
    tight = add_verdicts(eq, stats, group, margin(0.0015), pairs)
    loose = add_verdicts(eq, stats, group, margin(0.01), pairs)
    default = add_verdicts(eq, stats, group, None, pairs)
    unpaired = add_verdicts(eq, stats, group, margin(0.01))
    assert tight["tost"].item() == NOT_SHOWN and loose["tost"].item() == EQUIVALENT
    assert default["margin"].item() == 0.005 and default["tost"].item() == EQUIVALENT
    assert unpaired["tost"].item() == NOT_TESTED and unpaired["pairs"].item() == 0
    assert loose["ci_low"].item() == pytest.approx(0.001 - half)
    assert loose["seeds_needed"].item() == seeds_needed(0.0005, 0.01)
    both = pd.concat([tight.assign(model="a"), loose.assign(model="b")])
    gaps = {"acc_gap_after_m1": 0.0, "acc_gap_last10": 0.0, "loss_gap_last10": 0.0}
    groups = group_verdicts(both.assign(**gaps), group)
    assert groups[["model", "margin", "tost"]].values.tolist() == [
        ["a", 0.0015, NOT_SHOWN],
        ["b", 0.01, EQUIVALENT],
    ]


# ---------------------------------------------------------------------------------------------
# The suite's report.equivalence_margin


def test_the_margin_is_a_report_setting_outside_the_cell_id(tmp_path):
    plain = load_suite(write(tmp_path, MINIMAL, name="plain.yaml"))
    stated = load_suite(write(tmp_path, MINIMAL + "report: {equivalence_margin: 0.01}\n"))
    assert [c.cell_id for c in stated.cells] == [c.cell_id for c in plain.cells]
    assert {c.equivalence_margin for c in stated.cells} == {0.01}
    assert {c.equivalence_margin for c in plain.cells} == {None}
    for bad in ("0", "-0.1", "1.5", "wide"):
        with pytest.raises(UserError, match=r"report\.equivalence_margin: "):
            load_suite(write(tmp_path, MINIMAL), overrides=[f"report.equivalence_margin={bad}"])
    with pytest.raises(UserError, match=r"report\.margin: "):
        load_suite(write(tmp_path, MINIMAL + "report: {margin: 0.01}\n"))


def test_a_bad_margin_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, MINIMAL + "report: {equivalence_margin: 2}\n")
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    assert "report.equivalence_margin" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_report_shows_the_test_under_the_margin_the_rows_carry(tmp_path):
    """The committed 3-seed results: with the default margin the test shows nothing; with
    the margin a suite would write into the rows (0.05, five points) it shows equivalence."""
    result = run_cli("report", str(SEEDS))
    assert result.returncode == 0, result.stderr
    for column in ("margin", "90% CI of paired Δ", "paired TOST", "seeds needed", "pairs"):
        assert f" {column} " in result.stdout
    assert "Equivalence test (paired TOST)" in result.stdout
    # increasing batch minus decaying lr over the 3 seeds: -3.02 to -0.11 pp, sd(d) 1.3 pp
    assert _test_cells(_group_line(result.stdout)) == ["0.50 pp", NOT_SHOWN, "28"]
    assert "-3.02 to -0.11 pp" in result.stdout
    # Appendix A from the rows' plans: N = 5000, increasing_batch's last B 512, m 0.9
    assert "Epochs lost to the momentum accumulation (Appendix A)" in result.stdout
    assert "5-6: B 512, m 0.9 → 1.02" in result.stdout  # 512 / (5000 * 0.1) = 1.024
    wide = tmp_path / "smoke-seeds"
    shutil.copytree(SEEDS, wide)
    for path in (wide / "runs").glob("*.parquet"):
        table = pq.read_table(path)
        column = pa.array([0.05] * table.num_rows, pa.float64())
        if "equivalence_margin" in table.column_names:
            table = table.drop_columns(["equivalence_margin"])
        pq.write_table(table.append_column("equivalence_margin", column), path)
    result = run_cli("report", str(wide))
    assert result.returncode == 0, result.stderr
    assert _test_cells(_group_line(result.stdout))[:2] == ["5.00 pp", EQUIVALENT]


def _group_line(report: str) -> dict[str, str]:
    """The report's one group row (the verdicts table, first in its suite), by column."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("### Verdicts"))
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| experiment"))
    names = [c.strip() for c in lines[header].strip("|").split("|")]
    cells = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    return dict(zip(names, cells, strict=True))


def _test_cells(group: dict[str, str]) -> list[str]:
    return [group["margin"], group["paired TOST"], group["seeds needed"]]


# ---------------------------------------------------------------------------------------------
# Weight decay for Adam: L2 (the paper's reading, docs/paper.md) or decoupled (adamw, an extra)


def test_adam_takes_decay_as_l2_and_adamw_decoupled():
    """With a zero gradient, AdamW shrinks p by exactly lr · λ · p; Adam's L2 term enters the
    moments as the gradient λ p, so its first step is about lr · sign(p) instead."""
    import torch

    from harness.train.optim import build_optimizer
    from harness.train.spec import OptimizerConfig

    steps = {}
    for kind in ("adam", "adamw"):
        p = torch.nn.Parameter(torch.tensor([2.0, -4.0], dtype=torch.float64))
        spec = OptimizerConfig(kind=kind, lr=1e-3, weight_decay=0.05)
        opt = build_optimizer([p], spec, torch.device("cpu"))
        p.grad = torch.zeros_like(p)
        opt.step()
        steps[kind] = (torch.tensor([2.0, -4.0], dtype=torch.float64) - p.detach()).tolist()
    assert steps["adamw"] == pytest.approx([1e-3 * 0.05 * 2.0, -1e-3 * 0.05 * 4.0])
    assert steps["adam"] == pytest.approx([1e-3, -1e-3], rel=1e-4)


def test_adamw_is_an_optimizer_kind_of_a_suite(tmp_path):
    text = MINIMAL.replace(
        "  momentum: {kind: momentum, lr: 0.1, momentum: 0.9}\n",
        "  momentum: {kind: adamw, lr: 0.001, weight_decay: 0.05}\n",
    )
    suite = load_suite(write(tmp_path, text))
    assert {c.optimizer.kind for c in suite.cells} == {"adamw"}
    assert {p.momentum for c in suite.cells for p in c.plan.phases} == {0.0}


# ---------------------------------------------------------------------------------------------
# docs/paper.md: every reading names a line that exists and still says what the doc quotes


def test_every_reading_in_docs_paper_names_a_line_that_says_it():
    import re

    text = (REPO / "docs" / "paper.md").read_text()
    refs = re.findall(r"`([\w./-]+):(\d+)` `((?:[^`\\]|\\.)+)`", text)
    assert len(refs) >= 20, refs
    for path, line, quoted in refs:
        lines = (REPO / path).read_text().splitlines()
        assert int(line) <= len(lines), f"{path}:{line}: past the end"
        quoted = quoted.replace("\\|", "|")
        now = [str(i) for i, text in enumerate(lines, 1) if quoted in text]
        assert quoted in lines[int(line) - 1], f"{path}:{line} no longer says {quoted!r}; " + (
            f"it is now at line {', '.join(now)}: update docs/paper.md" if now else "gone"
        )
    numbers = sorted(int(n) for n in re.findall(r"^\| (\d+) \|", text, flags=re.M))
    assert numbers == list(range(1, 16))  # the readings, numbered without a gap


def test_a_run_writes_the_suites_margin_into_its_rows_and_the_report_uses_it(tmp_path):
    """The real path: `harness run` on synthetic data (4 tiny cells, 2 epochs), then
    `harness report`: the rows carry report.equivalence_margin and the tables show it."""
    text = (
        MINIMAL.replace("train_size: 1000, test_size: 100", "train_size: 128, test_size: 32")
        .replace("epochs: 10", "epochs: 2")
        .replace("milestones: [4, 8]", "milestones: [1]")
        .replace("width: 8", "width: 4")
        + "report: {equivalence_margin: 0.2}\n"
    )
    suite = write(tmp_path, text)
    results = tmp_path / "results"
    ran = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    runs = pd.read_parquet(results / "runs")
    assert len(runs) == 4 and set(runs["equivalence_margin"]) == {0.2}
    report = run_cli("report", str(results))
    assert report.returncode == 0, report.stderr
    group = _group_line(report.stdout)
    assert group["margin"] == "20.00 pp"
    assert group["paired TOST"] in (EQUIVALENT, NOT_SHOWN, DIFFERENT, NOT_TESTED)


def test_epochs_lost_has_a_row_per_plan_where_seeds_planned_differently():
    """An adaptive schedule's plan is its decisions', one per seed (results/adaptive-cpu, two
    seeds): a row per plan, the schedule naming its seed; a planned schedule stays one row."""
    from harness.analysis.momentum import epochs_lost_table, format_epochs_lost
    from harness.analysis.tables import load_results

    results = load_results([REPO / "results" / "adaptive-cpu"])
    lost = epochs_lost_table(results)
    runs = results.views
    for schedule, same in lost.groupby("schedule"):
        rows = runs[runs["schedule"] == schedule]
        assert sorted(s for seeds in same["seeds"] for s in seeds) == sorted(rows["seed"])
        assert len(same) == rows["plan"].nunique()  # one row per distinct plan
        for seeds, sizes in zip(same["seeds"], same["batch_sizes"], strict=True):
            plan = json.loads(rows[rows["seed"] == seeds[0]]["plan"].iloc[0])
            assert sizes == tuple(p["batch_size"] for p in plan)
    assert lost.groupby("schedule").size().to_dict() == {
        "adaptive": 2, "adaptive_x0.25": 2, "adaptive_x4": 2, "decaying_lr": 1,
        "increasing_batch": 1,
    }  # fmt: skip
    shown = format_epochs_lost(lost)["schedule"].tolist()
    assert "adaptive (seed 1)" in shown and "increasing_batch" in shown
    assert "decaying_lr" in shown  # both seeds' one plan, no seed named


def test_equal_paired_differences_are_a_rounding_not_a_zero_width_interval():
    """cifar-cpu's momentum: increasing batch minus decaying lr is -0.50 pp on both seeds (2000
    test images: accuracies are multiples of 0.05 pp). sd(d) = 0 would make the interval a
    point and the verdict 'different'; the floor 1 / (n_test sqrt 6) keeps it 'not shown'."""
    from harness.analysis.tables import equivalence_table, load_results

    eq = equivalence_table(load_results([REPO / "results" / "cifar-cpu"]))
    row = eq[(eq["optimizer"] == "momentum") & (eq["schedule"] == "increasing_batch")].iloc[0]
    assert row["pairs"] == 2 and row["final_acc_gap"] == pytest.approx(-0.005)
    half = sps.t.ppf(0.95, 1) / (2000 * math.sqrt(6)) / math.sqrt(2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.005 - half, -0.005 + half))
    assert row["tost"] == NOT_SHOWN
