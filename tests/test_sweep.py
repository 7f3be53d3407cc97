"""harness.analysis.sweep on synthetic curves whose steps to the target follow S(B) exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.sweep import (
    crossing,
    fit_steps,
    fits_table,
    format_fits,
    format_sweep,
    sweep_table,
)
from harness.analysis.tables import Results

N, S_MIN, B_NOISE, TARGET = 16384, 300.0, 200.0, 1.4
BATCHES = (16, 32, 64, 128, 256, 512, 1024)


def _results(reach: bool = True) -> Results:
    """One sweep: per B a constant cell whose mean minibatch loss falls linearly in steps and
    crosses TARGET at S(B) = S_MIN (1 + B_NOISE / B); the last cell never gets there unless
    `reach`. Measured noise components give B_simple = 250 in every cell."""
    runs, curves = [], []
    for b in BATCHES:
        cell = f"cell{b}"
        steps_to = S_MIN * (1 + B_NOISE / b)
        per_epoch = N // b
        epochs = math.ceil(2 * steps_to / per_epoch) + 1
        if not reach and b == BATCHES[-1]:
            epochs = 2
        for e in range(1, epochs + 1):
            middle = (e - 0.5) * per_epoch
            curves.append(
                {
                    "cell_id": cell,
                    "epoch": e,
                    "updates": e * per_epoch,
                    "batch_size": b,
                    "lr": 0.1,
                    "train_loss": 2.3 - (2.3 - TARGET) * middle / steps_to,
                    "noise_trace": 50.0,
                    "noise_grad_sq": 0.2,
                }
            )
        runs.append(
            {
                "cell_id": cell,
                "suite": "s",
                "experiment": "sweep",
                "optimizer": "momentum",
                "model": "cnn",
                "seed": 0,
                "schedule": f"b{b}",
                "status": "ok",
                "epochs": epochs,
                "sweep_metric": "train_loss",
                "sweep_target": TARGET,
                "config": json.dumps({"dataset": {"train_size": N}}),
            }
        )
    return Results(runs=pd.DataFrame(runs), curves=pd.DataFrame(curves))


def test_fits_recover_the_critical_batch_size_exactly():
    sweep = sweep_table(_results())
    assert list(sweep["batch_size"]) == list(BATCHES) and sweep["reached"].all()
    expected = np.array([S_MIN * (1 + B_NOISE / b) for b in BATCHES])
    np.testing.assert_allclose(sweep["steps"], expected, rtol=1e-9)
    np.testing.assert_allclose(sweep["epochs"], expected * np.array(BATCHES) / N, rtol=1e-9)
    fits = fits_table(sweep).iloc[0]
    assert fits["b_noise_steps"] == pytest.approx(B_NOISE)
    assert fits["steps_min"] == pytest.approx(S_MIN)
    assert fits["b_noise_epochs"] == pytest.approx(B_NOISE)
    assert fits["epochs_min"] == pytest.approx(S_MIN * B_NOISE / N)
    assert fits["b_noise_steps_se"] == pytest.approx(0, abs=1e-6)  # an exact fit
    assert fits["b_simple_pooled"] == pytest.approx(250.0)


def test_a_cell_that_never_reaches_the_target_is_not_fitted():
    sweep = sweep_table(_results(reach=False))
    assert not sweep["reached"].iloc[-1] and math.isnan(sweep["steps"].iloc[-1])
    fits = fits_table(sweep).iloc[0]
    assert (fits["fitted"], fits["cells"]) == (6, 7)
    assert fits["b_noise_steps"] == pytest.approx(B_NOISE)
    shown = format_sweep(sweep)
    assert shown["steps to target"].iloc[-1] == "not reached"
    assert "of 7" in format_fits(fits_table(sweep))["cells fitted"].iloc[0]


def test_crossing_interpolates_within_the_epoch_and_flags_an_early_one():
    curves = pd.DataFrame(
        {"epoch": [1, 2, 3], "updates": [10, 20, 30], "test_acc": [0.2, 0.4, 0.8]}
    )
    assert crossing(curves, "test_acc", 0.6) == (25.0, 2.5, False)
    assert crossing(curves, "test_acc", 0.1) == (10.0, 1.0, True)
    assert math.isnan(crossing(curves, "test_acc", 0.9)[0])


def test_noisy_fit_has_a_standard_error():
    b = np.array(BATCHES, dtype=float)
    noise = np.array([1.03, 0.97, 1.02, 0.99, 1.01, 0.98, 1.0])
    fit = fit_steps(b, S_MIN * (1 + B_NOISE / b) * noise)
    assert fit.b_noise == pytest.approx(B_NOISE, rel=0.2)
    assert 0 < fit.b_noise_se < B_NOISE


def test_the_sweep_figure_is_written(tmp_path: Path):
    from harness.analysis.figures import _sweep

    sweep = sweep_table(_results())
    fig = _sweep(sweep, fits_table(sweep), "s / sweep")
    fig.savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 1000


def test_a_sweep_needs_constant_schedules(tmp_path: Path):
    from harness.config.suite import load_suite
    from harness.errors import UserError

    suite = Path("suites/noise-sweep.yaml").read_text()
    (tmp_path / "ok.yaml").write_text(suite)
    cells = load_suite(tmp_path / "ok.yaml").cells
    assert {c.sweep.target for c in cells if c.sweep} == {1.4}
    (tmp_path / "bad.yaml").write_text(suite.replace("milestones: []", "milestones: [2]"))
    with pytest.raises(UserError, match="constant schedules"):
        load_suite(tmp_path / "bad.yaml")


def test_the_report_of_a_sweep_fits_it_and_compares_no_schedule_with_b16() -> None:
    """The committed CPU sweep: its report has the fit and no equivalence section (its
    constant batches are not realizations of one schedule)."""
    from harness.analysis.document import build_report

    text = build_report([Path(__file__).parents[1] / "results" / "noise-sweep"], "markdown")
    assert "Batch sweep: the critical batch size" in text
    assert "462 ± 44" in text  # from steps
    assert "645 ± 58" in text  # from epochs as images seen, E = S B / N (issue 38)
    assert "Equivalence with decaying lr" not in text


def test_epochs_are_images_seen_over_n_not_epoch_numbers():
    """With drop_last an epoch is floor(N/B) steps: at N = 5000, B = 1024 it sees 4096
    images, so 10 epoch numbers are 8.19 epochs of McCandlish's E = S B / N."""
    results = _results()
    runs = results.runs.assign(config=json.dumps({"dataset": {"train_size": 5000}}))
    curves = results.curves.copy()
    one = curves["cell_id"] == "cell1024"
    curves.loc[one, "updates"] = curves.loc[one, "epoch"] * (5000 // 1024)
    sweep = sweep_table(Results(runs=runs, curves=curves))
    row = sweep[sweep["batch_size"] == 1024].iloc[0]
    assert row["epochs"] == pytest.approx(row["steps"] * 1024 / 5000)
    assert row["epochs"] < row["epoch_number"]
