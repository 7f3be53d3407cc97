"""Batch-size sweeps: steps and epochs to a target, the critical batch size, B_simple beside it.

A sweep is an ordinary experiment whose cells are constant schedules, one per batch size B,
with a target in its run rows (`sweep_metric`, `sweep_target`; the suite's
experiments[].sweep). For each cell this module finds where the metric first reaches the
target, at epoch resolution: each epoch gives one point, interpolated linearly (in steps and
in epochs) between the last point short of the target and the first one past it. An
evaluated metric (train_eval_loss, test_loss, test_acc) is a point at the epoch's end; the
mean minibatch loss (train_loss) is the average over the epoch's steps, so it is placed at
the epoch's middle step. A cell already past the target at its first point is counted there
and flagged (an upper bound); one that never reaches it is left out of the fit.

Fits (McCandlish et al. 2018, eqs. 2.11-2.12): S(B) = S_min (1 + B_noise / B) is linear in
1/B and E(B) = E_min (1 + B / B_noise) linear in B, so each is ordinary least squares; the
critical batch size B_noise is a ratio of the two coefficients and its standard error comes
from their covariance (delta method). The two fits are one model (S B = E N) weighted
differently: steps weight the small batches, epochs the large ones. With three points the
error has one degree of freedom; it is a fit error, not a spread over seeds.

B_simple beside it: the meter's per-epoch components (tr Sigma, |G|^2; execution.noise_scale)
averaged over the epochs up to and including the one where the target was reached, weighted
by their steps, and their ratio (never a mean of ratios); "pooled" averages the cells' values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.display import count_text, finite
from harness.analysis.tables import Results, dataset_size

HIGHER_IS_BETTER = {"test_acc"}
SWEEP_RULE = (
    "Each cell trains one constant batch size B; steps S to the target are read from the "
    "curves at epoch resolution, interpolated linearly within the epoch where the target is "
    "crossed (an epoch's mean minibatch loss placed at its middle step; '≤' marks a cell "
    "already past the target at its first point), and epochs are the images seen over N, "
    "E = S·B/N (an epoch of floor(N/B) steps sees fewer than N images). B_noise is the "
    "critical batch size of McCandlish et al.'s S(B) = S_min (1 + B_noise/B), fitted by "
    "least squares in 1/B, and of E(B) = E_min (1 + B/B_noise), fitted in B (one model, "
    "S·B = E·N, weighted differently); ± is the fit's standard error (delta method), not a "
    "spread over seeds. B_simple = tr(Σ)/|G|² is the gradient noise scale measured during "
    "the same runs (per cell: its epochs up to the target, step-weighted, ratio of the "
    "averages; measured: the cells' averages pooled). Cells that never reach the target are "
    "not fitted."
)
KEYS = ["suite", "experiment", "optimizer", "model", "seed"]


@dataclass(frozen=True)
class Fit:
    """B_noise from one linear fit, with its standard error (NaN where it has none)."""

    b_noise: float
    b_noise_se: float
    minimum: float  # S_min (steps) or E_min (epochs)
    minimum_se: float
    points: int


def crossing(cell_curves: pd.DataFrame, metric: str, target: float) -> tuple[float, float, bool]:
    """(steps, epochs, first point already past) where `metric` first reaches `target`.

    (nan, nan, False) if it never does. `cell_curves`: one cell's curve rows.
    """
    rows = cell_curves.sort_values("epoch")
    updates = rows["updates"].to_numpy(dtype=float)
    epochs = rows["epoch"].to_numpy(dtype=float)
    values = rows[metric].to_numpy(dtype=float)
    if metric == "train_loss":  # an average over the epoch: its middle
        steps = np.diff(np.concatenate([[0.0], updates]))
        updates, epochs = updates - steps / 2, epochs - 0.5
    keep = np.isfinite(values)
    updates, epochs, values = updates[keep], epochs[keep], values[keep]
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    past = sign * (values - target) >= 0
    if not past.any():
        return math.nan, math.nan, False
    i = int(np.argmax(past))
    if i == 0:
        return float(updates[0]), float(epochs[0]), True
    w = (target - values[i - 1]) / (values[i] - values[i - 1])
    return (
        float(updates[i - 1] + w * (updates[i] - updates[i - 1])),
        float(epochs[i - 1] + w * (epochs[i] - epochs[i - 1])),
        False,
    )


def _measured_noise(cell_curves: pd.DataFrame, through_epoch: float) -> tuple[float, float]:
    """Step-weighted mean tr(Sigma) and |G|^2 over the epochs up to `through_epoch`."""
    if "noise_trace" not in cell_curves:
        return math.nan, math.nan
    rows = cell_curves.sort_values("epoch")
    steps = np.diff(np.concatenate([[0.0], rows["updates"].to_numpy(dtype=float)]))
    keep = rows["epoch"].to_numpy(dtype=float) <= math.ceil(through_epoch)
    trace = rows["noise_trace"].to_numpy(dtype=float)
    grad = rows["noise_grad_sq"].to_numpy(dtype=float)
    keep &= np.isfinite(trace) & np.isfinite(grad)
    if not keep.any():
        return math.nan, math.nan
    w = steps[keep]
    return float(np.average(trace[keep], weights=w)), float(np.average(grad[keep], weights=w))


def sweep_table(results: Results) -> pd.DataFrame:
    """One row per sweep cell: B, lr, steps and epochs to the target, measured B_simple."""
    runs = results.runs
    if "sweep_target" not in runs:
        return pd.DataFrame()
    runs = runs[runs["sweep_target"].notna() & (runs["status"] == "ok")]
    # A label's rows of several recipes are shown apart (the views' schedule names them) and
    # never fitted together: which of them belongs to which curve S(B) is not known.
    views = results.views
    named = views[~views["is_alias"]] if "is_alias" in views else views
    schedule_of = dict(zip(named["cell_id"], named["schedule"], strict=True))
    mixed = {c.group for c in results.clashes}
    rows = []
    for run in runs.to_dict("records"):
        curves = results.curves[results.curves["cell_id"] == run["cell_id"]]
        if curves.empty:
            continue
        metric, target = str(run["sweep_metric"]), float(run["sweep_target"])
        steps, epoch, early = crossing(curves, metric, target)
        through = epoch if math.isfinite(epoch) else float(curves["epoch"].max())
        batch = int(curves["batch_size"].iloc[0])
        # McCandlish's E counts examples processed, E = S B / N: with drop_last an epoch of
        # the harness is floor(N/B) steps, fewer images than N (at B = 1024 of 5000, 4880),
        # so the epoch number at the crossing overstates E (until 2026-12-07 it was fitted).
        n = dataset_size(run["config"], "train_size")
        epochs = steps * batch / n if math.isfinite(steps) else math.nan
        trace, grad = _measured_noise(curves, through)
        rows.append(
            {
                "suite": run["suite"],
                "experiment": run["experiment"],
                "optimizer": run["optimizer"],
                "model": run["model"],
                "seed": run["seed"],
                "schedule": schedule_of.get(run["cell_id"], run["schedule"]),
                "mixed": tuple(str(run[k]) for k in ("suite", "experiment", "optimizer", "model"))
                in mixed,
                "batch_size": batch,
                "lr": float(curves["lr"].iloc[0]),
                "metric": metric,
                "target": target,
                "steps": steps,
                "epochs": epochs,
                "epoch_number": epoch,
                "reached": math.isfinite(steps),
                "upper_bound": early,
                "trained_epochs": int(run["epochs"]),
                "final_value": float(curves.sort_values("epoch")[metric].dropna().iloc[-1]),
                "noise_trace": trace,
                "noise_grad_sq": grad,
                "b_simple": trace / grad if grad > 0 else math.nan,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values([*KEYS, "batch_size"]).reset_index(drop=True) if rows else frame


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares y = a + c x: (coefficients [a, c], their covariance; NaN with 2 points)."""
    design = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - 2
    if dof <= 0:
        return coef, np.full((2, 2), np.nan)
    resid = y - design @ coef
    sigma2 = float(resid @ resid) / dof
    return coef, sigma2 * np.linalg.inv(design.T @ design)


def _ratio(num: float, den: float, var_num: float, var_den: float, cov: float) -> float:
    """Delta-method standard error of num / den."""
    r = num / den
    var = r * r * (var_num / num**2 + var_den / den**2 - 2 * cov / (num * den))
    return math.sqrt(var) if var >= 0 else math.nan


def fit_steps(batch: np.ndarray, steps: np.ndarray) -> Fit:
    """S = S_min + (S_min B_noise) / B: B_noise = slope / intercept."""
    (a, c), cov = _line(1.0 / batch, steps)
    se = _ratio(c, a, cov[1, 1], cov[0, 0], cov[0, 1])
    return Fit(c / a, se, a, math.sqrt(cov[0, 0]), len(batch))


def fit_epochs(batch: np.ndarray, epochs: np.ndarray) -> Fit:
    """E = E_min + (E_min / B_noise) B: B_noise = intercept / slope."""
    (a, c), cov = _line(batch.astype(float), epochs)
    se = _ratio(a, c, cov[0, 0], cov[1, 1], cov[0, 1])
    return Fit(a / c, se, a, math.sqrt(cov[0, 0]), len(batch))


def fits_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per sweep (suite, experiment, optimizer, model, seed): both fits and pooled B_simple.

    A sweep with rows of several recipes under one label (`mixed`) is not fitted."""
    out = []
    if sweep.empty:
        return pd.DataFrame()
    for key, group in sweep.groupby(KEYS, sort=True):
        used = (
            group[group["reached"] & ~group["mixed"].astype(bool)]
            if "mixed" in group
            else group[group["reached"]]
        )
        row = dict(zip(KEYS, key))
        row.update(
            metric=group["metric"].iloc[0],
            target=group["target"].iloc[0],
            cells=len(group),
            fitted=len(used),
        )
        b = used["batch_size"].to_numpy(dtype=float)
        for name, fit in (("steps", fit_steps), ("epochs", fit_epochs)):
            f = fit(b, used[name].to_numpy(dtype=float)) if len(used) >= 2 else None
            row[f"b_noise_{name}"] = f.b_noise if f else math.nan
            row[f"b_noise_{name}_se"] = f.b_noise_se if f else math.nan
            row[f"{name}_min"] = f.minimum if f else math.nan
        measured = group[np.isfinite(group["noise_grad_sq"])]
        grad = measured["noise_grad_sq"].mean()
        row["b_simple_pooled"] = measured["noise_trace"].mean() / grad if grad > 0 else math.nan
        out.append(row)
    return pd.DataFrame(out)


def format_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    """A batch sweep's cells: steps and epochs to the target, measured B_simple."""

    def num(x: float, fmt: str = ".1f") -> str:
        return format(x, fmt) if finite(x) else "–"

    return pd.DataFrame(
        {
            "experiment": sweep["experiment"],
            "optimizer": sweep["optimizer"],
            "B": sweep["batch_size"].astype(str),
            "lr": [f"{x:g}" for x in sweep["lr"]],
            "steps to target": [
                ("≤ " if early else "") + num(x, ",.0f") if ok else "not reached"
                for x, ok, early in zip(sweep["steps"], sweep["reached"], sweep["upper_bound"])
            ],
            "epochs to target": [num(x, ".2f") for x in sweep["epochs"]],
            "trained epochs": sweep["trained_epochs"].astype(str),
            "final value": [num(x, ".4g") for x in sweep["final_value"]],
            "B_simple (to target)": [num(x, ".0f") for x in sweep["b_simple"]],
        }
    )


def format_fits(fits: pd.DataFrame) -> pd.DataFrame:
    """A batch sweep's critical batch size from both fits, beside the pooled B_simple."""

    def est(x: float, se: float) -> str:
        return "–" if not finite(x) else f"{x:.0f} ± {se:.0f}" if finite(se) else f"{x:.0f}"

    return pd.DataFrame(
        {
            "experiment": fits["experiment"],
            "optimizer": fits["optimizer"],
            "model": fits["model"],
            "seed": fits["seed"].astype(str),
            "target": [f"{m} = {t:g}" for m, t in zip(fits["metric"], fits["target"])],
            "cells fitted": [f"{f} of {c}" for f, c in zip(fits["fitted"], fits["cells"])],
            "B_noise from S(B)": [
                est(x, se) for x, se in zip(fits["b_noise_steps"], fits["b_noise_steps_se"])
            ],
            "S_min": [count_text(x) for x in fits["steps_min"]],
            "B_noise from E(B)": [
                est(x, se) for x, se in zip(fits["b_noise_epochs"], fits["b_noise_epochs_se"])
            ],
            "E_min": [f"{x:.2f}" if finite(x) else "–" for x in fits["epochs_min"]],
            "B_simple measured": [est(x, math.nan) for x in fits["b_simple_pooled"]],
        }
    )
