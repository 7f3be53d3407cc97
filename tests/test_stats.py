"""The paper's words as checks (harness.analysis.paper) and the seed yardstick
(harness.analysis.seeds), on the shipped suites and on fake results folders (no training)."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.analysis.paper import check_counts, parse_count_claim, run_accuracies
from harness.analysis.render import FORMATS, format_summary, format_verdicts
from harness.analysis.report import build_report
from harness.analysis.seeds import (
    NO_YARDSTICK,
    OUTSIDE,
    WITHIN,
    group_verdicts,
    pooled_std,
    seed_stats,
    verdict,
)
from harness.analysis.tables import GROUP, Results, equivalence_table, load_results, summary_table
from harness.config.schema import PaperFigure
from harness.config.suite import load_suite
from tests.conftest import SUITES
from tests.fakes import FakeExperiment, FakeSchedule, write_fake_results

# ---------------------------------------------------------------------------------------------
# The paper's words about update counts


@pytest.mark.parametrize(
    ("words", "rule", "inside", "outside"),
    [
        ("~80000", "76,000 ≤ n ≤ 84,000", [76000, 78000, 84000], [75999, 84001]),
        ("about 29,000", "27,550 ≤ n ≤ 30,450", [28800], [27000, 31000]),
        ("just over 14000", "14,000 < n ≤ 14,700", [14040, 14700], [14000, 14701, 13000]),
        ("just under 6000", "5,700 ≤ n < 6,000", [5700, 5820], [6000, 5699]),
        ("under 6500", "5,200 ≤ n < 6,500", [5200, 6300], [6500, 5199, 100]),
        ("below 6000", "4,800 ≤ n < 6,000", [5580], [6000, 4000]),
        ("less than 2500", "2,000 ≤ n < 2,500", [2160], [2500, 1000]),
        ("over 1000", "1,000 < n ≤ 1,250", [1001, 1250], [1000, 1251]),
        ("14000 updates", "n = 14,000", [14000], [14001]),
        ("~80k", "76,000 ≤ n ≤ 84,000", [80000], [70000]),
    ],
)
def test_count_claims_read_the_papers_words(
    words: str, rule: str, inside: list[int], outside: list[int]
) -> None:
    claim = parse_count_claim(words)
    assert claim is not None and claim.rule == rule
    assert all(claim.holds(n) for n in inside), inside
    assert not any(claim.holds(n) for n in outside), outside
    assert not claim.holds(math.nan)


@pytest.mark.parametrize("words", ["", "a lot", "under", "between 5 and 6", "~-5", "80000?"])
def test_words_that_are_not_read_are_not_checked(words: str) -> None:
    assert parse_count_claim(words) is None
    check = check_counts(words, [80000.0])
    assert check.ok is None
    assert check.mark == ("" if words == "" else "not checked")


@given(st.text(max_size=40))
def test_parsing_never_raises(words: str) -> None:
    parse_count_claim(words)
    check_counts(words, [1.0, math.nan])


def test_every_seed_must_satisfy_the_claim() -> None:
    assert check_counts("under 2500", [2160, 2160]).ok is True
    assert check_counts("under 2500", [2160, 1200]).ok is False  # one seed stopped early
    assert check_counts(None, [2160]).mark == ""
    assert check_counts("under 2500", [math.nan]).mark == "not checked"


def _paper_cells() -> list[tuple[str, int, str]]:
    out = []
    for path in sorted(SUITES.glob("*.yaml")):
        for cell in load_suite(path).cells:
            if cell.paper is not None and cell.paper.updates is not None:
                out.append((f"{path.name}:{cell.label}", cell.plan.updates, cell.paper.updates))
    return out


def test_every_shipped_statement_parses_and_holds_for_the_planned_count() -> None:
    cells = _paper_cells()
    pairs = {(count, words) for _, count, words in cells}
    # The brief's list: what `harness plan` gives beside the paper's words.
    assert pairs == {
        (78000, "~80000"),
        (28800, "~29000"),
        (6300, "under 6500"),
        (2160, "under 2500"),
        (14040, "just over 14000"),
        (5580, "below 6000"),
        (5820, "just under 6000"),
        (3480, "under 3500"),
        (2310, "under 2500"),
    }
    for label, count, words in cells:
        claim = parse_count_claim(words)
        assert claim is not None, (label, words)
        assert claim.holds(count), (label, count, claim.rule)


# ---------------------------------------------------------------------------------------------
# The paper's per-run accuracies


def test_run_accuracies_are_read_from_the_source() -> None:
    assert run_accuracies("Sec 5.3, Fig 6 (78.7% and 77.8%)") == (0.787, 0.778)
    assert run_accuracies("(1%, 2.5% and 3%)") == (0.01, 0.025, 0.03)
    for source in ("Sec 5.2, Fig 5", "(78.7%)", None, 3.0, "78.7% and 77.8%"):
        assert run_accuracies(source) is None


def test_shipped_per_run_values_agree_with_their_sources() -> None:
    seen = 0
    for path in sorted(SUITES.glob("*.yaml")):
        for cell in load_suite(path).cells:
            if cell.paper is None:
                continue
            assert cell.paper.test_acc_runs == run_accuracies(cell.paper.source), cell.label
            seen += cell.paper.test_acc_runs is not None
    assert seen == 4 * 2  # Fig 6's two schedules and Fig 7's two repeated ones, 2 seeds each


def test_paper_figure_test_acc_must_be_the_runs_mean() -> None:
    PaperFigure(test_acc=0.7825, test_acc_runs=(0.787, 0.778))
    with pytest.raises(ValidationError, match="not the mean"):
        PaperFigure(test_acc=0.79, test_acc_runs=(0.787, 0.778))
    with pytest.raises(ValidationError, match="test_acc_runs"):
        PaperFigure(test_acc_runs=())


# ---------------------------------------------------------------------------------------------
# Seed statistics


def test_seed_stats_count_finite_values_only() -> None:
    runs = pd.DataFrame(
        {
            "schedule": ["a", "a", "a", "b", "c"],
            "final_test_acc": [0.90, 0.94, math.nan, 0.5, math.nan],
        }
    )
    stats = seed_stats(runs, ["schedule"]).set_index("schedule")
    assert stats.loc["a", "n"] == 2
    assert stats.loc["a", "mean"] == pytest.approx(0.92)
    assert stats.loc["a", "std"] == pytest.approx(np.std([0.90, 0.94], ddof=1))
    assert (stats.loc["a", "min"], stats.loc["a", "max"]) == (0.90, 0.94)
    assert stats.loc["b", "n"] == 1 and np.isnan(stats.loc["b", "std"])
    assert stats.loc["c", "n"] == 0 and np.isnan(stats.loc["c", "mean"])


def test_pooled_std_weights_by_degrees_of_freedom() -> None:
    ns, stds = pd.Series([3, 2, 1]), pd.Series([0.02, 0.01, math.nan])
    assert pooled_std(ns, stds) == pytest.approx(math.sqrt((2 * 0.02**2 + 0.01**2) / 3))
    assert math.isnan(pooled_std(pd.Series([1]), pd.Series([math.nan])))


def test_verdict_rule() -> None:
    assert verdict(0.01, 0.02, 2) == WITHIN
    assert verdict(-0.02, 0.02, 3) == WITHIN  # the boundary is within
    assert verdict(-0.021, 0.02, 2) == OUTSIDE
    assert verdict(0.0, math.nan, 1) == NO_YARDSTICK
    assert verdict(0.0, 0.02, 1) == NO_YARDSTICK


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Results:
    root = tmp_path_factory.mktemp("seeded")
    experiments = [
        FakeExperiment(
            "grid", ("momentum",), ("decaying_lr", "hybrid", "increasing_batch"), seeds=(0, 1, 2)
        ),
        FakeExperiment("single", ("adam",), ("decaying_lr", "increasing_batch"), seeds=(0,)),
    ]
    write_fake_results(root, experiments, epochs=12, milestones=(4, 8), one_file=True)
    return load_results([root])


def test_summary_groups_cells_that_differ_only_by_seed(seeded: Results) -> None:
    summary = summary_table(seeded)
    runs = seeded.runs
    for _, row in summary.iterrows():
        mine = runs[
            (runs["experiment"] == row["experiment"]) & (runs["schedule"] == row["schedule"])
        ]["final_test_acc"]
        assert row["test_acc_n"] == row["seeds"] == len(mine)
        assert row["test_acc_mean"] == pytest.approx(mine.mean())
        assert row["test_acc_min"] == mine.min() and row["test_acc_max"] == mine.max()
        if len(mine) > 1:
            assert row["test_acc_std"] == pytest.approx(mine.std())
    assert set(summary.loc[summary["experiment"] == "grid", "test_acc_n"]) == {3}
    text = "\n".join(format_summary(summary)["seed range"])
    assert "–" in text and "%" in text


def _set_final_accs(results: Results, accs: dict[str, list[float]]) -> Results:
    """`results` with the final accuracies of experiment grid's schedules, seed by seed."""
    runs = results.runs.copy()
    for schedule, values in accs.items():
        mine = runs.index[(runs["experiment"] == "grid") & (runs["schedule"] == schedule)]
        runs.loc[runs.loc[mine].sort_values("seed").index, "final_test_acc"] = values
    return Results(runs=runs, curves=results.curves, dirs=results.dirs)


def _verdicts(results: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    eq = equivalence_table(results)
    return eq.set_index(["experiment", "schedule"]), group_verdicts(eq, GROUP)


def test_a_gap_within_the_seed_range_is_within(seeded: Results) -> None:
    results = _set_final_accs(
        seeded,
        {
            "decaying_lr": [0.90, 0.92, 0.91],  # range 0.02, the group's largest
            "hybrid": [0.915, 0.925, 0.92],  # Δ +0.01
            "increasing_batch": [0.92, 0.93, 0.925],  # Δ +0.015
        },
    )
    eq, groups = _verdicts(results)
    row = eq.loc[("grid", "increasing_batch")]
    assert row["final_acc_gap"] == pytest.approx(0.015)
    assert row["seed_range"] == pytest.approx(0.02)
    assert row["seeds"] == 3 and row["verdict"] == WITHIN
    group = groups.set_index("experiment").loc["grid"]
    assert group["verdict"] == WITHIN and group["largest_gap_schedule"] == "increasing_batch"
    assert group["final_acc_gap"] == pytest.approx(0.015)
    expected_std = pooled_std(pd.Series([3, 3, 3]), pd.Series([0.01, 0.005, 0.005]))
    assert group["pooled_std"] == pytest.approx(expected_std)


def test_a_gap_beyond_the_seed_range_is_outside(seeded: Results) -> None:
    results = _set_final_accs(
        seeded,
        {
            "decaying_lr": [0.90, 0.92, 0.91],
            "hybrid": [0.915, 0.925, 0.92],  # Δ +0.01: within
            "increasing_batch": [0.94, 0.945, 0.95],  # Δ +0.035 > 0.02: outside
        },
    )
    eq, groups = _verdicts(results)
    assert eq.loc[("grid", "hybrid"), "verdict"] == WITHIN
    assert eq.loc[("grid", "increasing_batch"), "verdict"] == OUTSIDE
    group = groups.set_index("experiment").loc["grid"]
    assert group["verdict"] == OUTSIDE  # the worst of the group's
    assert group["final_acc_gap"] == pytest.approx(0.035)


def test_one_seed_has_no_yardstick(seeded: Results) -> None:
    eq, groups = _verdicts(seeded)
    row = eq.loc[("single", "increasing_batch")]
    assert row["seeds"] == 1 and row["verdict"] == NO_YARDSTICK
    assert math.isnan(row["seed_range"]) and math.isnan(row["pooled_std"])
    assert groups.set_index("experiment").loc["single", "verdict"] == NO_YARDSTICK
    shown = format_verdicts(groups)
    assert NO_YARDSTICK in set(shown["verdict"])


def test_a_seed_without_accuracy_leaves_one_seed(seeded: Results) -> None:
    results = _set_final_accs(seeded, {"hybrid": [0.91, math.nan, math.nan]})
    eq, _ = _verdicts(results)
    assert eq.loc[("grid", "hybrid"), "verdict"] == NO_YARDSTICK
    assert (
        summary_table(results)
        .set_index(["experiment", "schedule"])
        .loc[("grid", "hybrid"), "test_acc_n"]
        == 1
    )


# ---------------------------------------------------------------------------------------------
# Update counts checked in the report


SEC52 = FakeExperiment(
    "sec5.2",
    ("momentum",),
    ("decaying_lr", "increasing_batch", "increased_lr", "increased_momentum"),
    seeds=(0, 1),
    paper={
        "momentum/decaying_lr": (0.943, "~80000"),
        "momentum/increasing_batch": (0.944, "~29000"),
        "momentum/increased_lr": (0.945, "under 6500", "Sec 5.2, Fig 5 (94.6% and 94.4%)"),
        "momentum/increased_momentum": (0.933, "a few thousand"),
    },
)


@pytest.fixture(scope="module")
def paper_length(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Sec 5.2 grid at the paper's length (200 epochs), so planned counts are the paper's."""
    root = tmp_path_factory.mktemp("sec52")
    write_fake_results(root, [SEC52], epochs=200, milestones=(60, 120, 160), one_file=True)
    return root


def test_counts_at_the_papers_length_check_out(paper_length: Path) -> None:
    summary = summary_table(load_results([paper_length])).set_index("schedule")
    assert summary["updates"].to_dict() == {
        "decaying_lr": 78000,
        "increasing_batch": 28800,
        "increased_lr": 6300,
        "increased_momentum": 2160,
    }
    assert summary.loc["decaying_lr", "updates_ok"] is True
    assert summary.loc["decaying_lr", "updates_rule"] == "76,000 ≤ n ≤ 84,000"
    assert summary.loc["increased_lr", "updates_ok"] is True
    assert summary.loc["increased_momentum", "updates_ok"] is None
    assert summary.loc["increased_momentum", "updates_rule"] == "not checked"
    assert summary.loc["increased_lr", "paper_test_acc_runs"] == (0.946, 0.944)
    assert summary.loc["decaying_lr", "paper_test_acc_runs"] is None
    text = build_report([paper_length])
    assert "✓ 76,000 ≤ n ≤ 84,000" in text and "✓ 5,200 ≤ n < 6,500" in text
    assert "not checked" in text and "94.6%, 94.4%" in text and "✗" not in text


def test_counts_of_a_shortened_run_are_marked_wrong(tmp_path: Path) -> None:
    write_fake_results(tmp_path, [SEC52], epochs=20, milestones=(6, 12, 16), one_file=True)
    summary = summary_table(load_results([tmp_path])).set_index("schedule")
    assert summary.loc["decaying_lr", "updates_ok"] is False  # 7800, not ~80000
    shown = format_summary(summary.reset_index())
    assert "✗ 76,000 ≤ n ≤ 84,000" in set(shown["updates vs paper"])


# ---------------------------------------------------------------------------------------------
# Every format renders the new columns


@pytest.mark.parametrize("fmt", FORMATS)
def test_report_with_checks_and_verdicts_renders_in_every_format(
    paper_length: Path, fmt: str
) -> None:
    text = build_report([paper_length], fmt=fmt)
    if fmt == "csv":
        back = pd.read_csv(io.StringIO(text))
        assert {"test_acc_n", "test_acc_min", "test_acc_max", "updates_ok", "updates_rule"} <= set(
            back.columns
        )
        assert back["test_acc_max"].between(0, 1).all()  # fractions
        return
    assert "Verdict rule" in text and "seed spread" in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    if fmt == "latex":
        assert r"$\checkmark$" in text and r"$\leq$" in text
    elif fmt == "html":
        assert "✓" in text and "&lt;" in text
    else:
        assert "✓" in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_seed_report_renders_in_every_format(tmp_path: Path, fmt: str) -> None:
    schedules = {"decaying_lr": FakeSchedule("lr"), "increasing_batch": FakeSchedule("batch")}
    experiment = FakeExperiment("e", ("momentum",), tuple(schedules), seeds=(0,))
    write_fake_results(tmp_path, [experiment], schedules, epochs=6, milestones=(2, 4))
    text = build_report([tmp_path], fmt=fmt)
    if fmt != "csv":
        assert "no yardstick" in text
