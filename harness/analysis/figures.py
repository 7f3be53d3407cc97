"""The paper's figures (Smith et al. 2018, Figs 1-5) drawn from results folders.

Per suite and experiment, three PNG files:
- ``<suite>-<experiment>-schedule.png``: lr, batch size and noise scale vs epoch (Fig 1);
- ``<suite>-<experiment>-loss.png``: training loss vs epochs and vs parameter updates;
- ``<suite>-<experiment>-accuracy.png``: test accuracy vs epochs and vs parameter updates.
One column of panels per optimizer, one line per schedule: the mean over seeds, with a
min-max band where there are several seeds.

Figures are built on `matplotlib.figure.Figure` and saved through the Agg canvas, never
through pyplot, so drawing here changes no global matplotlib state (backend, rcParams, the
pyplot figure list) of whoever imported us.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from harness.analysis.tables import Results

DPI = 120
KINDS = ("schedule", "loss", "accuracy")
_STYLES = ("-", "--", "-.", ":")  # equivalent schedules overlap; dashes keep each visible


def safe_name(name: str) -> str:
    """A filesystem-safe, stable version of a suite or experiment name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "unnamed"


def figure_path(out_dir: Path, suite: str, experiment: str, kind: str) -> Path:
    return out_dir / f"{safe_name(suite)}-{safe_name(experiment)}-{kind}.png"


def write_figures(
    results: Results, out_dir: Path, suites: Sequence[str] | None = None
) -> list[Path]:
    """Write the three figures of every experiment (of `suites`, default all) into `out_dir`.

    Returns the paths written, in suite, experiment, KINDS order. Existing files of the same
    names are overwritten; an experiment without curve rows gets no figures.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    views = results.views
    if suites is not None:
        views = views[views["suite"].isin(list(suites))]
    written: list[Path] = []
    for (suite, experiment), runs in views.groupby(["suite", "experiment"], sort=True):
        curves = _mean_curves(runs, results.curves)
        if curves.empty:
            continue
        title = f"{suite} / {experiment}"
        for kind, draw in (("schedule", _schedule), ("loss", _loss), ("accuracy", _accuracy)):
            fig = draw(curves, title)
            path = figure_path(out_dir, str(suite), str(experiment), kind)
            FigureCanvasAgg(fig)
            fig.savefig(path, dpi=DPI)
            written.append(path)
    return written


def _mean_curves(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, schedule, model, epoch): mean, min and max over seeds."""
    members = runs[["cell_id", "optimizer", "schedule", "model", "updates"]].rename(
        columns={"updates": "total_updates"}
    )
    joined = curves.merge(members.drop_duplicates(), on="cell_id", how="inner")
    if joined.empty:
        return joined
    keys = ["optimizer", "schedule", "model", "epoch"]
    grouped = joined.groupby(keys, dropna=False)
    out = grouped[["updates", "lr", "batch_size", "noise_scale"]].mean()
    for metric in ("train_loss", "test_acc", "train_eval_loss"):
        if metric not in joined:
            joined[metric] = np.nan  # curves written before the column existed
            grouped = joined.groupby(keys, dropna=False)
        stats = grouped[metric].agg(["mean", "min", "max", "count"])
        stats.columns = [f"{metric}_{c}" for c in stats.columns]
        out = out.join(stats)
    out = out.reset_index()
    # Schedules ordered as the paper lists them: most updates (the lr reference) first.
    order = (
        joined.groupby("schedule")["total_updates"]
        .mean()
        .sort_values(ascending=False, kind="stable")
        .index
    )
    out["schedule"] = pd.Categorical(out["schedule"], categories=list(order), ordered=True)
    return out.sort_values([*keys[:3], "epoch"]).reset_index(drop=True)


def _lines(curves: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """Line label per (schedule, model) -> (label, style index), stable across panels."""
    pairs = curves[["schedule", "model"]].drop_duplicates().sort_values(["schedule", "model"])
    several_models = pairs["model"].nunique() > 1
    labels: dict[str, tuple[str, int]] = {}
    for i, (schedule, model) in enumerate(pairs.itertuples(index=False, name=None)):
        label = f"{schedule} · {model}" if several_models else str(schedule)
        labels[f"{schedule}\x00{model}"] = (label, i)
    return labels


def _grid(
    curves: pd.DataFrame, rows: int, title: str
) -> tuple[Figure, list[str], list[list[Axes]]]:
    optimizers = sorted(curves["optimizer"].astype(str).unique())
    cols = len(optimizers)
    # A floor on the width keeps a one-optimizer figure's title inside the canvas.
    width = max(6.0, 4.4 * cols + 0.6)
    fig = Figure(figsize=(width, 3.3 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(title, fontsize=13)
    return fig, optimizers, [list(r) for r in axes]


def _plot(
    ax: Axes,
    curves: pd.DataFrame,
    labels: dict[str, tuple[str, int]],
    x: str,
    metric: str,
    scale: float = 1.0,
    step: bool = False,
    band: bool = True,
) -> None:
    colors = [f"C{i}" for i in range(10)]
    for (schedule, model), line in curves.groupby(["schedule", "model"], observed=True):
        line = line.dropna(subset=[metric if not band else f"{metric}_mean"])
        if line.empty:
            continue
        label, i = labels[f"{schedule}\x00{model}"]
        y = line[metric if not band else f"{metric}_mean"].to_numpy() * scale
        xs = line[x].to_numpy()
        style: dict[str, Any] = {
            "color": colors[i % 10],
            "linestyle": _STYLES[i % len(_STYLES)],
            "lw": 1.6,
        }
        if step:
            ax.step(xs, y, where="pre", label=label, **style)
        else:
            ax.plot(xs, y, label=label, **style)
        if band and (line[f"{metric}_count"] > 1).any():
            lo = line[f"{metric}_min"].to_numpy() * scale
            hi = line[f"{metric}_max"].to_numpy() * scale
            ax.fill_between(xs, lo, hi, color=colors[i % 10], alpha=0.18, lw=0)
    ax.grid(True, alpha=0.3)


def _schedule(curves: pd.DataFrame, title: str) -> Figure:
    fig, optimizers, axes = _grid(curves, 3, f"{title}\nlr, batch size and noise scale per epoch")
    labels = _lines(curves)
    rows = (
        ("lr", "learning rate (per update)", "linear"),
        ("batch_size", "batch size (images, log)", "log"),
        ("noise_scale", "noise scale g = lr/(1-m)·(N/B-1) (log)", "log"),
    )
    for c, opt in enumerate(optimizers):
        sub = curves[curves["optimizer"] == opt]
        for r, (metric, ylabel, yscale) in enumerate(rows):
            ax = axes[r][c]
            _plot(ax, sub, labels, "epoch", metric, step=True, band=False)
            ax.set_yscale(yscale)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            if r == 0:
                ax.set_title(opt)
    axes[0][0].legend(fontsize=8, title="schedule", title_fontsize=8)
    return fig


def _vs_epochs_and_updates(
    curves: pd.DataFrame, title: str, metric: str, ylabel: str, scale: float, log: bool
) -> Figure:
    fig, optimizers, axes = _grid(curves, 2, title)
    labels = _lines(curves)
    for c, opt in enumerate(optimizers):
        sub = curves[curves["optimizer"] == opt]
        for r, (x, xlabel) in enumerate((("epoch", "epoch"), ("updates", "parameter updates"))):
            ax = axes[r][c]
            _plot(ax, sub, labels, x, metric, scale=scale)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{opt}: vs {xlabel}")
            if x == "updates":
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=8, title="schedule", title_fontsize=8)
    return fig


def _loss(curves: pd.DataFrame, title: str) -> Figure:
    # The paper plots the training set's loss; where it was measured (eval mode, no
    # augmentation, every image) it is drawn, else the mean of the epoch's minibatch losses.
    whole = curves["train_eval_loss_count"].gt(0).any()
    what = "whole training set, eval mode" if whole else "mean of the epoch's minibatches"
    return _vs_epochs_and_updates(
        curves,
        f"{title}\ntraining loss ({what}; mean over seeds; band: min-max)",
        "train_eval_loss" if whole else "train_loss",
        "training cross-entropy (log)",
        1.0,
        log=True,
    )


def _accuracy(curves: pd.DataFrame, title: str) -> Figure:
    fig = _vs_epochs_and_updates(
        curves,
        f"{title}\ntest accuracy (mean over seeds; band: min-max)",
        "test_acc",
        "test accuracy (%)",
        100.0,
        log=False,
    )
    # Zoom on the part the paper's claim is about: early epochs sit far below the end.
    values = curves["test_acc_mean"].dropna().to_numpy() * 100.0
    if values.size:
        low = max(float(np.percentile(values, 10)) - 5.0, float(values.min()))
        top = float(curves["test_acc_max"].max() * 100.0)
        for ax in fig.axes:
            ax.set_ylim(low, min(100.0, top + 0.5))
    return fig
