"""harness.analysis (tables, render, report, figures) on fake results folders (no training)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.display import figure_links as _figure_links
from harness.analysis.display import provenance_lines
from harness.analysis.document import build_report
from harness.analysis.render import FORMATS, render
from harness.analysis.tables import Results, equivalence_table, load_results, summary_table
from harness.errors import UserError
from tests.fakes import CIFAR_LIKE, FakeExperiment, FakeSchedule, write_fake_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_results(root, CIFAR_LIKE, statuses={"sec5.1/sgd/hybrid/seed1": "diverged"})
    return root


@pytest.fixture(scope="module")
def cifar(cifar_dir: Path) -> Results:
    return load_results([cifar_dir])


# Schedules whose curves are the reference's exactly, or shifted by known amounts.
SHIFT_ACC, SHIFT_LOSS = 0.0125, -0.05
EQUIV_SCHEDULES = {
    "decaying_lr": FakeSchedule("lr"),
    "same": FakeSchedule("batch", copy_of="decaying_lr"),
    "shifted": FakeSchedule(
        "hybrid",
        batch_drops=1,
        copy_of="decaying_lr",
        acc_offset=SHIFT_ACC,
        loss_offset=SHIFT_LOSS,
    ),
    "batch_only": FakeSchedule("batch"),
}


@pytest.fixture(scope="module")
def equiv(tmp_path_factory: pytest.TempPathFactory) -> Results:
    root = tmp_path_factory.mktemp("equiv")
    experiments = [
        FakeExperiment("grid", ("momentum",), ("decaying_lr", "same", "shifted"), seeds=(0, 1)),
        # No lr-realization schedule: the table must skip this experiment, not fail.
        FakeExperiment("no_reference", ("momentum",), ("batch_only",), seeds=(5,)),
    ]
    # eval_every=2: test accuracy is NaN on odd epochs, as with a sparse evaluation.
    write_fake_results(root, experiments, EQUIV_SCHEDULES, eval_every=2, epochs=20)
    return load_results([root])


def _row(eq: pd.DataFrame, schedule: str) -> pd.Series:
    rows = eq[(eq["experiment"] == "grid") & (eq["schedule"] == schedule)]
    assert len(rows) == 1
    return rows.iloc[0]


# ---------------------------------------------------------------------------------------------
# load_results


def test_load_results_rejects_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such results folder"):
        load_results([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no finished runs"):
        load_results([tmp_path / "empty"])


def test_load_results_keeps_the_newest_run_of_a_cell_and_its_curves(tmp_path: Path) -> None:
    experiments = [FakeExperiment("e", ("momentum",), ("decaying_lr",), seeds=(0,))]
    old = write_fake_results(tmp_path / "old", experiments, rng_seed=1)
    later = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    new = write_fake_results(tmp_path / "new", experiments, rng_seed=2, start=later)
    assert old[0]["cell_id"] == new[0]["cell_id"]
    for order in (["old", "new"], ["new", "old"]):
        results = load_results([tmp_path / d for d in order])
        assert len(results.runs) == 1
        assert results.runs["final_test_acc"].iloc[0] == new[0]["final_test_acc"]
        assert len(results.curves) == 20  # the new folder's curves only, not both
        last = results.curves.sort_values("epoch")["test_acc"].iloc[-1]
        assert last == new[0]["final_test_acc"]


# ---------------------------------------------------------------------------------------------
# summary


def test_summary_has_one_row_per_schedule_optimizer_with_seed_statistics(cifar: Results) -> None:
    summary = summary_table(cifar)
    sec51 = summary[summary["experiment"] == "sec5.1"]
    assert len(sec51) == 4 * 3
    assert (sec51["seeds"] == 3).all()
    runs = cifar.runs
    mine = runs[
        (runs["experiment"] == "sec5.1")
        & (runs["optimizer"] == "adam")
        & (runs["schedule"] == "hybrid")
    ]
    row = sec51[(sec51["optimizer"] == "adam") & (sec51["schedule"] == "hybrid")].iloc[0]
    assert row["test_acc_mean"] == pytest.approx(mine["final_test_acc"].mean())
    assert row["test_acc_std"] == pytest.approx(mine["final_test_acc"].std())
    assert row["updates"] == mine["updates"].iloc[0]


def test_summary_counts_non_ok_cells(cifar: Results) -> None:
    summary = summary_table(cifar)
    bad = summary[summary["not_ok"] > 0]
    assert list(zip(bad["optimizer"], bad["schedule"], bad["status"], strict=True)) == [
        ("sgd", "hybrid", "1 diverged")
    ]


def test_summary_has_paper_columns_where_rows_carry_them(cifar: Results) -> None:
    summary = summary_table(cifar)
    sec52 = summary[summary["experiment"] == "sec5.2"].set_index("schedule")
    assert sec52.loc["increased_lr", "paper_test_acc"] == pytest.approx(0.945)
    assert sec52.loc["increased_lr", "paper_updates"] == "under 6500"
    expected = 100 * (sec52.loc["increased_lr", "test_acc_mean"] - 0.945)
    assert sec52.loc["increased_lr", "diff_pp"] == pytest.approx(expected)
    no_paper = summary[(summary["experiment"] == "sec5.1") & (summary["optimizer"] == "adam")]
    assert no_paper["paper_test_acc"].isna().all() and no_paper["diff_pp"].isna().all()
    text = build_report([cifar.dirs[0]])
    assert "94.50%" in text and "under 6500" in text and " pp" in text


def test_aliased_cell_appears_under_both_experiments(cifar: Results) -> None:
    summary = summary_table(cifar)
    hits = summary[(summary["optimizer"] == "momentum") & (summary["schedule"] == "decaying_lr")]
    assert sorted(hits["experiment"]) == ["sec5.1", "sec5.2"]
    assert hits["test_acc_mean"].nunique() == 1  # the same cells, not a re-run
    assert len(cifar.runs) == 4 * 3 * 3 + 2 * 3  # aliases are not extra cells on disk
    text = build_report([cifar.dirs[0]])
    lines = [ln for ln in text.splitlines() if "| decaying_lr" in ln and "momentum" in ln]
    assert any(ln.startswith("| sec5.1") for ln in lines)
    assert any(ln.startswith("| sec5.2") for ln in lines)


def test_summary_orders_reference_first(cifar: Results) -> None:
    sec52 = summary_table(cifar).query("experiment == 'sec5.2'")
    assert list(sec52["schedule"]) == [
        "decaying_lr",
        "increasing_batch",
        "increased_lr",
        "increased_momentum",
    ]


# ---------------------------------------------------------------------------------------------
# equivalence


def test_identical_schedule_has_zero_gaps(equiv: Results) -> None:
    row = _row(equivalence_table(equiv), "same")
    assert row["reference"] == "decaying_lr"
    for col in ("acc_gap_after_m1", "loss_gap_after_m1", "acc_gap_last10", "loss_gap_last10"):
        assert row[col] == 0.0, col
    assert row["epochs_compared"] == 20


def test_shifted_schedule_has_exactly_its_shift(equiv: Results) -> None:
    row = _row(equivalence_table(equiv), "shifted")
    assert row["acc_gap_after_m1"] == pytest.approx(SHIFT_ACC, abs=1e-12)
    assert row["acc_gap_last10"] == pytest.approx(SHIFT_ACC, abs=1e-12)
    assert row["loss_gap_after_m1"] == pytest.approx(abs(SHIFT_LOSS), abs=1e-12)
    assert row["loss_gap_last10"] == pytest.approx(abs(SHIFT_LOSS), abs=1e-12)


def test_update_ratio_is_schedule_over_reference(equiv: Results) -> None:
    eq = equivalence_table(equiv)
    runs = equiv.runs.set_index("schedule")["updates"].groupby(level=0).first()
    for schedule in ("same", "shifted"):
        expected = runs[schedule] / runs["decaying_lr"]
        assert _row(eq, schedule)["update_ratio"] == pytest.approx(expected)
    assert _row(eq, "same")["update_ratio"] < _row(eq, "shifted")["update_ratio"] < 1


def test_experiment_without_reference_gives_no_rows(equiv: Results) -> None:
    eq = equivalence_table(equiv)
    assert "no_reference" not in set(eq["experiment"])
    assert len(eq) == 2


def _with_curves(results: Results, curves: pd.DataFrame) -> Results:
    return Results(runs=results.runs, curves=curves, dirs=results.dirs)


def _cells(results: Results, schedule: str) -> pd.Series:
    return results.runs.loc[results.runs["schedule"] == schedule, "cell_id"]


def test_gap_windows_are_after_first_milestone_and_last_tenth(equiv: Results) -> None:
    curves = equiv.curves.copy()
    same = curves["cell_id"].isin(_cells(equiv, "same"))
    # Epoch 4 is before the first milestone (6): it must count in neither window.
    curves.loc[same & (curves["epoch"] == 4), "test_acc"] += 0.5
    # Epoch 10 is after the first milestone but outside the last 10% (epochs 19-20).
    curves.loc[same & (curves["epoch"] == 10), "test_acc"] += 0.03
    curves.loc[same & (curves["epoch"] == 10), "train_loss"] += 0.2
    # Epoch 19 has no test accuracy (eval every 2); its training loss is compared.
    curves.loc[same & (curves["epoch"] == 19), "train_loss"] += 0.07
    row = _row(equivalence_table(_with_curves(equiv, curves)), "same")
    assert row["acc_gap_after_m1"] == pytest.approx(0.03)
    assert row["loss_gap_after_m1"] == pytest.approx(0.2)
    assert row["acc_gap_last10"] == 0.0
    assert row["loss_gap_last10"] == pytest.approx(0.07)


def test_cells_of_different_lengths_compare_per_epoch_number(equiv: Results) -> None:
    curves = equiv.curves
    shifted = curves["cell_id"].isin(_cells(equiv, "shifted"))
    # One seed of the schedule stops at epoch 12, the other at 16: compare epochs 1-16.
    first, second = sorted(_cells(equiv, "shifted"))
    drop = ((curves["cell_id"] == first) & (curves["epoch"] > 12)) | (
        (curves["cell_id"] == second) & (curves["epoch"] > 16)
    )
    assert shifted[drop].all()
    row = _row(equivalence_table(_with_curves(equiv, curves[~drop])), "shifted")
    assert row["epochs_compared"] == 16
    assert row["loss_gap_last10"] == pytest.approx(abs(SHIFT_LOSS), abs=0.02)  # 1 seed at 13+
    assert np.isfinite(row["acc_gap_last10"])


def test_schedule_without_milestones_has_no_after_milestone_gap(equiv: Results) -> None:
    runs = equiv.runs.copy()
    runs["milestones"] = [[] for _ in range(len(runs))]
    row = _row(equivalence_table(Results(runs, equiv.curves)), "shifted")
    assert np.isnan(row["acc_gap_after_m1"]) and np.isnan(row["loss_gap_after_m1"])
    assert row["acc_gap_last10"] == pytest.approx(SHIFT_ACC, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# rendering and the report


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_every_format(fmt: str) -> None:
    df = pd.DataFrame({"schedule": ["decaying_lr", "hybrid"], "acc": ["94.3 ± 0.1%", None]})
    text = render(df, fmt)
    marker = {
        "markdown": "|:-",
        "github": "|---",
        "latex": "\\begin{tabular}",
        "html": "<table>",
        "csv": "schedule,acc",
    }[fmt]
    assert marker in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    if fmt == "latex":
        assert "decaying\\_lr" in text and "$\\pm$" in text
    if fmt == "csv":
        back = pd.read_csv(io.StringIO(text))
        assert list(back.columns) == ["schedule", "acc"]


def test_render_unknown_format_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--format") as err:
        render(pd.DataFrame({"a": [1]}), "rst")
    assert "markdown" in str(err.value) and "csv" in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_build_report_every_format(cifar_dir: Path, fmt: str) -> None:
    text = build_report([cifar_dir], fmt=fmt)
    assert "sec5.2" in text and "increased" in text
    if fmt == "csv":
        back = pd.read_csv(io.StringIO(text))
        assert {"suite", "experiment", "test_acc_mean", "paper_test_acc"} <= set(back.columns)
        assert back["test_acc_mean"].between(0, 1).all()  # fractions, not percent
    else:
        assert "Suite cifar" in text and "Provenance" in text
        assert "CIFAR-10 copy: official (42)" in text
        assert not re.search(r"\bnan\b", text)


def test_build_report_rejects_unknown_format(cifar_dir: Path) -> None:
    with pytest.raises(UserError, match="--format"):
        build_report([cifar_dir], fmt="pdf")


def test_provenance_lists_versions_devices_commits_and_dates(cifar: Results) -> None:
    runs = cifar.runs.copy()
    runs.loc[runs.index[0], "git_dirty"] = True
    text = "\n".join(provenance_lines(runs))
    for needle in ("NVIDIA H100 80GB HBM3", "2.11.0+cu128", "0.1.0", "(dirty)", "2025-03-01"):
        assert needle in text
    runs["dataset"] = "synthetic"
    assert "JPEG" not in "\n".join(provenance_lines(runs))


# ---------------------------------------------------------------------------------------------
# figures


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    experiments = [
        FakeExperiment(
            "sec5.1", ("momentum", "adam"), ("decaying_lr", "increasing_batch"), seeds=(0, 1)
        )
    ]
    write_fake_results(root, experiments, epochs=12, milestones=(4, 8))
    return root


@pytest.fixture(scope="module")
def report_with_figures(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report written as REPORT/report.md with its figures in REPORT/figures (drawn once:
    drawing is the slow part)."""
    out = tmp_path_factory.mktemp("report")
    text = build_report([small_dir], figures_dir=out / "figures", links_relative_to=out)
    (out / "report.md").write_text(text)
    return out


def test_figures_are_valid_pngs(report_with_figures: Path) -> None:
    paths = sorted((report_with_figures / "figures").iterdir())
    assert [p.name for p in paths] == [
        "cifar-sec5.1-accuracy.png",
        "cifar-sec5.1-loss.png",
        "cifar-sec5.1-schedule.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 20_000, path


def test_report_links_figures_relative_to_the_report(report_with_figures: Path) -> None:
    text = (report_with_figures / "report.md").read_text()
    for kind in ("schedule", "loss", "accuracy"):
        link = f"![cifar-sec5.1-{kind}](figures/cifar-sec5.1-{kind}.png)"
        assert link in text
        assert (report_with_figures / "figures" / f"cifar-sec5.1-{kind}.png").is_file()


def test_figure_links_are_plain_paths_outside_markdown(tmp_path: Path) -> None:
    path = tmp_path / "figs" / "cifar-sec5.1-loss.png"
    assert _figure_links([path], "html", None) == [str(path)]
    assert _figure_links([path], "latex", tmp_path) == ["figs/cifar-sec5.1-loss.png"]
    assert _figure_links([path], "github", tmp_path) == [
        "![cifar-sec5.1-loss](figs/cifar-sec5.1-loss.png)"
    ]


def test_figure_names_are_filesystem_safe() -> None:
    from harness.analysis.figures import figure_path

    path = figure_path(Path("out"), "my suite", "sec 5/2 (a)", "loss")
    assert path == Path("out/my_suite-sec_5_2_a-loss.png")


def test_provenance_flags_a_copy_that_is_not_official() -> None:
    runs = pd.DataFrame(
        {
            "dataset": ["cifar10", "cifar10"],
            "data_source": ["jpeg-derived", "official"],
            "device": ["cuda", "cuda"],
            "device_name": ["H100", "H100"],
            "precision": ["bf16", "bf16"],
            "torch_version": ["2.11", "2.11"],
            "python_version": ["3.12", "3.12"],
            "harness_version": ["0.1.0", "0.1.0"],
            "git_dirty": [False, False],
            "git_commit": ["abc", "abc"],
            "hostname": ["h", "h"],
            "started_at": [pd.NaT, pd.NaT],
            "finished_at": [pd.NaT, pd.NaT],
            "status": ["ok", "ok"],
            "paper_source": [None, None],
        }
    )
    text = "\n".join(provenance_lines(runs))
    assert "CIFAR-10 copy: jpeg-derived (1), official (1)" in text
    assert "unmeasured offset" in text


def test_a_damaged_file_is_skipped_warned_about_and_listed(tmp_path: Path) -> None:
    from harness.results.paths import run_file
    from harness.results.store import DamagedFileWarning

    experiments = [FakeExperiment("e", ("momentum",), ("decaying_lr", "hybrid"), seeds=(0,))]
    rows = write_fake_results(tmp_path, experiments, epochs=4, milestones=(2,))
    bad = run_file(tmp_path, rows[0]["cell_id"])
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(DamagedFileWarning, match=str(bad)):
        results = load_results([tmp_path])
    assert results.runs["cell_id"].tolist() == [rows[1]["cell_id"]]
    assert [s.path for s in results.skipped] == [bad]
    with pytest.warns(DamagedFileWarning):
        text = build_report([tmp_path])
    assert "Unreadable files (skipped)" in text and str(bad) in text


def test_figures_read_plainly(small_dir: Path) -> None:
    """Plain tick labels on log axes, the lr panel on a log axis, '1 seed' where no band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from harness.analysis import figures
    from harness.analysis.tables import load_results

    results = load_results([small_dir])
    runs = results.views
    key = next(iter(runs.groupby(["suite", "experiment"]).groups))
    part = runs[(runs["suite"] == key[0]) & (runs["experiment"] == key[1])]
    curves = figures._mean_curves(part, results.curves)
    fig = figures._schedule(curves, "t")
    FigureCanvasAgg(fig).draw()
    lr_ax, batch_ax = fig.axes[0], fig.axes[len(fig.axes) // 3]
    assert lr_ax.get_yscale() == "log"
    labels = [t.get_text() for t in batch_ax.get_yticklabels() if t.get_text()]
    assert labels and all("10^" not in t and "times" not in t for t in labels)
    assert figures._plain(32.0) == "32" and figures._plain(1.2) == "1.2"
    one = curves.assign(train_loss_count=1)
    assert "1 seed (no band)" in figures._seeds_note(one, "train_loss")
    assert "band: min-max" in figures._seeds_note(curves.assign(train_loss_count=2), "train_loss")


def test_the_loss_figure_says_which_training_images_its_loss_is_of():
    """A fixed subset (execution.train_loss_images) is named in the figure's title; rows
    from before the column say the whole training set, as they were."""
    import pandas as pd

    from harness.analysis.figures import _mean_curves, _train_set_words

    runs = pd.DataFrame(
        {"cell_id": ["a", "b"], "optimizer": "m", "schedule": "s", "model": "w", "updates": 4}
    )
    curves = pd.DataFrame(
        {
            "cell_id": ["a", "a", "b", "b"],
            "epoch": [1, 2, 1, 2],
            "updates": [2, 4, 2, 4],
            "lr": 0.1,
            "batch_size": 32,
            "noise_scale": 1.0,
            "train_loss": [2.0, 1.5, 2.1, 1.4],
            "test_acc": [0.3, 0.4, 0.3, 0.5],
            "train_eval_loss": [1.9, 1.4, 2.0, 1.3],
            "train_eval_images": [10000] * 4,
            "noise_b_simple": float("nan"),
        }
    )
    mean = _mean_curves(runs, curves)
    assert _train_set_words(mean) == "training set's first 10000 images, eval mode"
    old = _mean_curves(runs, curves.drop(columns="train_eval_images"))
    assert _train_set_words(old) == "whole training set, eval mode"
