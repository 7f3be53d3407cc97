"""The paper's figures (Smith et al. 2018, Figs 1-5) drawn from results folders.

Per suite and experiment, three PNG files:
- ``<suite>-<experiment>-schedule.png``: lr, batch size and noise scale vs epoch (Fig 1);
- ``<suite>-<experiment>-loss.png``: training loss vs epochs and vs parameter updates;
- ``<suite>-<experiment>-accuracy.png``: test accuracy vs epochs and vs parameter updates;
- ``<suite>-<experiment>-noise.png`` (only where the curves carry the measured gradient noise
  scale, execution.noise_scale): B_simple per epoch beside the schedule's batch size B, and
  the schedule's noise scale g;
- ``<suite>-<experiment>-sweep.png`` (batch sweeps, harness.analysis.sweep): steps and epochs
  to the target vs B, log-log, with the fitted S(B), E(B), the knee B_noise and B_simple.
One column of panels per optimizer, one line per schedule: the mean over seeds, with a
min-max band where there are several seeds.

Figures are built on `matplotlib.figure.Figure` and saved through the Agg canvas, never
through pyplot, so drawing here changes no global matplotlib state (backend, rcParams, the
pyplot figure list) of whoever imported us.

Not split: every figure is one function of a few dozen lines over the same grid, mean curves
over seeds and file writer (`_grid`, `_mean_curves`, `_save`), which a split would share out.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from harness.analysis.sweep import fits_table, sweep_table
from harness.errors import printable
from harness.fsio import atomic_path, containing

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from harness.analysis.tables import Results

DPI = 120
KINDS = ("schedule", "loss", "accuracy")
_STYLES = ("-", "--", "-.", ":")  # equivalent schedules overlap; dashes keep each visible


_NAME_MAX = 80  # characters of one name in a figure's file name (a file name holds 255 bytes)


def safe_name(name: str) -> str:
    """A filesystem-safe, stable version of a suite or experiment name, at most 80 characters:
    a longer one (rows on disk may carry any name) keeps its start and a hash of the whole."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "unnamed"
    if len(safe) <= _NAME_MAX:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe[: _NAME_MAX - 11]}-{digest}"


def figure_stems(pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The file-name stem of each (suite, experiment)'s figures, distinct among `pairs`.

    A stem is the two names made filesystem-safe, ``<suite>-<experiment>``. Where stems of
    different pairs meet ("x y" and "x/y" are both ``x_y``; "Grid" and "grid" on a
    case-insensitive disk; suite "a-b" with "c" and "a" with "b-c"), each of those gets a short
    hash of its own names, so that no experiment's figures overwrite another's.
    """
    stems = {pair: f"{safe_name(pair[0])}-{safe_name(pair[1])}" for pair in set(pairs)}
    hashed: set[tuple[str, str]] = set()
    while True:
        seen = Counter(stem.lower() for stem in stems.values())
        clash = [p for p, stem in stems.items() if seen[stem.lower()] > 1 and p not in hashed]
        if not clash:
            return stems
        for pair in clash:
            key = "\x00".join(pair).encode("utf-8", "surrogatepass")
            stems[pair] += f"-{hashlib.sha256(key).hexdigest()[:8]}"
            hashed.add(pair)


def figure_path(
    out_dir: Path,
    suite: str,
    experiment: str,
    kind: str,
    among: Iterable[tuple[str, str]] = (),
) -> Path:
    """Where the `kind` figure of (suite, experiment) goes, its stem distinct among the pairs
    `among` (the others the same report draws)."""
    pair = (suite, experiment)
    return out_dir / f"{figure_stems([pair, *among])[pair]}-{kind}.png"


def write_figures(
    results: Results, out_dir: Path, suites: Sequence[str] | None = None
) -> list[Path]:
    """Write the three figures of every experiment (of `suites`, default all) into `out_dir`.

    Returns the paths written, in suite, experiment, KINDS order (then noise, sweep). Existing
    files of the same names are overwritten; an experiment without curve rows gets no figures.
    File names are distinct per experiment among every suite and experiment of `results`
    (`figure_stems`), whichever `suites` are drawn.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # Figures in a results folder follow its rule (no link written through, figures/ included).
    root = containing(out_dir, results.dirs) or out_dir
    views = results.views
    sweep = sweep_table(results)
    frames = [views, sweep] if not sweep.empty else [views]
    stems = figure_stems(
        (str(s), str(e))
        for frame in frames
        for s, e in frame[["suite", "experiment"]].itertuples(index=False)
    )
    if suites is not None:
        views = views[views["suite"].isin(list(suites))]
    written: list[Path] = []
    for (suite, experiment), runs in views.groupby(["suite", "experiment"], sort=True):
        curves = _mean_curves(runs, results.curves)
        if curves.empty:
            continue
        title = f"{_shown(suite)} / {_shown(experiment)}"
        stem = stems[(str(suite), str(experiment))]
        draws = [("schedule", _schedule), ("loss", _loss), ("accuracy", _accuracy)]
        if curves["noise_b_simple_count"].gt(0).any():
            draws.append(("noise", _noise))
        for kind, draw in draws:
            written.append(_save(draw(curves, title), root, out_dir / f"{stem}-{kind}.png"))
    if suites is not None and not sweep.empty:
        sweep = sweep[sweep["suite"].isin(list(suites))]
    if not sweep.empty:
        fits = fits_table(sweep)
        for (suite, experiment), points in sweep.groupby(["suite", "experiment"], sort=True):
            fit = fits[(fits["suite"] == suite) & (fits["experiment"] == experiment)]
            fig = _sweep(points, fit, f"{_shown(suite)} / {_shown(experiment)}")
            stem = stems[(str(suite), str(experiment))]
            written.append(_save(fig, root, out_dir / f"{stem}-sweep.png"))
    return written


def _shown(name: object) -> str:
    """A name (from rows anyone may have written) as figure text: printable (no newline or
    control character); `_save` makes every text of a figure plain, never math."""
    return printable(name)


def _save(fig: Figure, root: Path, path: Path) -> Path:
    # Every text as written: matplotlib would parse "$...$" in a name as math text, and a name
    # such as "$\\frac{1}$" failed the report. No text here is meant as math.
    for text in fig.findobj(Text):
        text.set_parse_math(False)
    FigureCanvasAgg(fig)
    with atomic_path(path, inside=root) as tmp:  # a planted link is refused, never followed
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


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
    if "train_eval_images" in joined:  # which training images the loss was measured on
        out = out.join(grouped["train_eval_images"].max())
    for metric in ("train_loss", "test_acc", "train_eval_loss", "noise_b_simple"):
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
        label = f"{_shown(schedule)} · {_shown(model)}" if several_models else _shown(schedule)
        labels[f"{schedule}\x00{model}"] = (label, i)
    return labels


def _plain(value: float, _pos: object = None) -> str:
    """A tick label as a reader writes the number: 32, 512, 1.2, 0.0125 (not 3x10^1)."""
    if value == 0:
        return "0"
    if abs(value) >= 1 and float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3g}"


def _plain_log(ax: Axes, axis: str = "y", base: int = 10) -> None:
    """Plain-number labels on a log axis; within less than a decade, evenly spaced nice ticks
    (1.2, 1.4, ...) instead of the log locator's lone sub-decade labels."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if lo > 0 and hi / lo < 10 and base == 10:
        target.set_major_locator(MaxNLocator(nbins=6))
    else:
        subs = (1.0,) if base != 10 else (1.0, 2.0, 5.0)
        target.set_major_locator(LogLocator(base=base, subs=subs))
    target.set_major_formatter(FuncFormatter(_plain))
    target.set_minor_formatter(NullFormatter())


def _wrap(title: str, width_in: float) -> str:
    """`title` wrapped to the figure's width (about 8 characters per inch at size 13)."""
    chars = max(30, int(width_in * 8))
    return "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))


def _seeds_note(curves: pd.DataFrame, metric: str) -> str:
    """'mean over n seeds; band: min-max', or '1 seed (no band)' where there is one."""
    count = curves.get(f"{metric}_count")
    n = int(count.max()) if count is not None and count.notna().any() else 0
    return "1 seed (no band)" if n <= 1 else f"mean over {n} seeds; band: min-max"


def _grid(
    curves: pd.DataFrame, rows: int, title: str
) -> tuple[Figure, list[str], list[list[Axes]]]:
    optimizers = sorted(curves["optimizer"].astype(str).unique())
    cols = len(optimizers)
    # A floor on the width keeps a one-optimizer figure's title inside the canvas.
    width = max(6.0, 4.4 * cols + 0.6)
    fig = Figure(figsize=(width, 3.3 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(_wrap(title, width), fontsize=13)
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
        ("lr", "learning rate (per update, log)", "log"),
        ("batch_size", "batch size (images, log)", "log"),
        ("noise_scale", "noise scale g = lr/(1-m)·(N/B-1) (log)", "log"),
    )
    for c, opt in enumerate(optimizers):
        sub = curves[curves["optimizer"] == opt]
        for r, (metric, ylabel, yscale) in enumerate(rows):
            ax = axes[r][c]
            _plot(ax, sub, labels, "epoch", metric, step=True, band=False)
            ax.set_yscale(yscale)
            _plain_log(ax, base=2 if metric == "batch_size" else 10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            if r == 0:
                ax.set_title(_shown(opt))
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
                _plain_log(ax)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{_shown(opt)}: vs {xlabel}")
            if x == "updates":
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=8, title="schedule", title_fontsize=8)
    return fig


def _loss(curves: pd.DataFrame, title: str) -> Figure:
    # The paper plots the training set's loss; where it was measured (eval mode, no
    # augmentation, every image) it is drawn, else the mean of the epoch's minibatch losses.
    measured = curves["train_eval_loss_count"].gt(0).any()
    what = _train_set_words(curves) if measured else "mean of the epoch's minibatches"
    metric = "train_eval_loss" if measured else "train_loss"
    return _vs_epochs_and_updates(
        curves,
        f"{title}\ntraining loss ({what}; {_seeds_note(curves, metric)})",
        metric,
        "training cross-entropy (log)",
        1.0,
        log=True,
    )


def _train_set_words(curves: pd.DataFrame) -> str:
    """Which training images the drawn loss is of: every one, or a fixed first K."""
    column = curves.get("train_eval_images")
    sizes = set() if column is None else set(column.dropna().astype(int))
    if not sizes:  # rows from before the column: the whole training set
        return "whole training set, eval mode"
    if len(sizes) == 1:
        return f"training set's first {sizes.pop()} images, eval mode"
    return f"training set's first {min(sizes)}-{max(sizes)} images, eval mode"


def _accuracy(curves: pd.DataFrame, title: str) -> Figure:
    fig = _vs_epochs_and_updates(
        curves,
        f"{title}\ntest accuracy ({_seeds_note(curves, 'test_acc')})",
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


def _noise(curves: pd.DataFrame, title: str) -> Figure:
    fig, optimizers, axes = _grid(
        curves, 2, f"{title}\nmeasured gradient noise scale B_simple beside the schedule"
    )
    labels = _lines(curves)
    for c, opt in enumerate(optimizers):
        sub = curves[curves["optimizer"] == opt]
        ax = axes[0][c]
        _plot(ax, sub, labels, "epoch", "noise_b_simple")
        # The schedule's B in the same colours, thin and stepped: B_simple is in examples too.
        for (schedule, model), line in sub.groupby(["schedule", "model"], observed=True):
            _, i = labels[f"{schedule}\x00{model}"]
            ax.step(
                line["epoch"],
                line["batch_size"],
                where="pre",
                color=f"C{i % 10}",
                lw=0.8,
                alpha=0.6,
                linestyle=":",
            )
        ax.set_yscale("log")
        _plain_log(ax)
        ax.set_ylabel("B_simple = tr(Σ)/|G|² (solid)\nbatch size B (dotted), examples")
        ax.set_title(_shown(opt))
        ax = axes[1][c]
        _plot(ax, sub, labels, "epoch", "noise_scale", step=True, band=False)
        ax.set_yscale("log")
        _plain_log(ax)
        ax.set_ylabel("noise scale g = lr/(1-m)·(N/B-1) (log)")
        for r in (0, 1):
            axes[r][c].set_xlabel("epoch")
            axes[r][c].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].legend(fontsize=8, title="schedule", title_fontsize=8)
    return fig


def _sweep(points: pd.DataFrame, fits: pd.DataFrame, title: str) -> Figure:
    """Steps and epochs to the target vs B (log-log) per sweep, the fits and the knee."""
    metric, target = points["metric"].iloc[0], points["target"].iloc[0]
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    axes = fig.subplots(1, 2)
    fig.suptitle(
        f"{title}\nto {_shown(metric)} = {target:g}: steps and epochs vs batch size", fontsize=12
    )
    groups = list(points.groupby(["optimizer", "model", "seed"], sort=True))
    for i, ((opt, model, seed), group) in enumerate(groups):
        label = f"{_shown(opt)} · {_shown(model)}" + (f" · seed {seed}" if len(groups) > 1 else "")
        fit = fits[(fits["optimizer"] == opt) & (fits["model"] == model) & (fits["seed"] == seed)]
        color = f"C{i % 10}"
        reached = group[group["reached"]]
        b = np.geomspace(group["batch_size"].min() / 1.5, group["batch_size"].max() * 1.5, 200)
        for ax, what, model_curve in (
            (axes[0], "steps", lambda m, bn, b=b: m * (1 + bn / b)),
            (axes[1], "epochs", lambda m, bn, b=b: m * (1 + b / bn)),
        ):
            ax.plot(reached["batch_size"], reached[what], "o", color=color, label=label)
            bounds = reached[reached["upper_bound"]]
            ax.plot(bounds["batch_size"], bounds[what], "v", color=color, ms=9, mfc="none")
            if fit.empty:
                continue
            row = fit.iloc[0]
            bn, minimum = row[f"b_noise_{what}"], row[f"{what}_min"]
            if np.isfinite(bn) and bn > 0 and minimum > 0:
                se = row[f"b_noise_{what}_se"]
                ax.plot(
                    b,
                    model_curve(minimum, bn),
                    "-",
                    color=color,
                    lw=1.2,
                    label=f"fit: B_noise = {bn:.0f} ± {se:.0f}",
                )
                ax.axvline(bn, color=color, ls="--", lw=0.9)
            bs = row["b_simple_pooled"]
            if np.isfinite(bs) and bs > 0:
                ax.axvline(bs, color=color, ls=":", lw=1.4, label=f"measured B_simple = {bs:.0f}")
    for ax, what in zip(axes, ("optimizer steps", "epochs")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log(ax, "x", base=2)
        _plain_log(ax)
        ax.set_xlabel("batch size B (images, log)")
        ax.set_ylabel(f"{what} to the target (log)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return fig
