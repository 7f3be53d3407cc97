"""Tables from results folders: what was measured, next to what the paper says.

Three views of the same run rows:
- the *summary*: per suite / experiment, one row per (schedule, optimizer, model) with final
  test accuracy over seeds, update count, cost, and the paper's numbers where it gives them;
- the *equivalence* table, the paper's first claim in numbers: how far each schedule's mean
  curves stray from the decaying-lr reference at equal epochs, and how many updates it needs;
- *provenance*: devices, versions, commits and dates behind the numbers.

A cell that belongs to several experiments (its run row lists the other labels in `aliases`)
is shown under every one of them. Accuracies are fractions in every frame and percent only
in rendered text. Nothing here trains or imports torch; matplotlib is imported only when
figures are asked for.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.errors import UserError
from harness.results.store import read_curves, read_runs

FORMATS = ("markdown", "github", "latex", "html", "csv")
_TABULATE_FORMATS = {"markdown": "pipe", "github": "github", "latex": "latex", "html": "html"}

# One row per (group, schedule): an experiment's grid seen through the paper's lens.
GROUP = ["suite", "experiment", "optimizer", "model"]
LABEL_PARTS = ["experiment", "optimizer", "schedule", "seed"]


@dataclass(frozen=True)
class Results:
    """Run rows (one per cell, newest wins) and the curve rows of exactly those runs."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    dirs: tuple[Path, ...] = ()

    @cached_property
    def views(self) -> pd.DataFrame:
        """`runs` with one extra row per alias, relabelled, plus a `label` column.

        The copies keep the cell id, numbers and paper fields of the cell they copy.
        """
        return expand_aliases(self.runs)


def latest_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id: the one with the newest `finished_at` (a missing time loses)."""
    if runs.empty:
        return runs
    ordered = runs.sort_values("finished_at", kind="stable", na_position="first")
    return ordered.drop_duplicates("cell_id", keep="last").sort_index()


def load_results(dirs: Sequence[Path | str]) -> Results:
    """Read and merge results folders; `UserError` if one is missing or holds no runs.

    A cell found in several folders keeps its newest run (by `finished_at`) and that run's
    own curves, so merging a re-run folder over an old one shows the re-run.
    """
    if not dirs:
        raise UserError("no results folders given; pass one or more, e.g. results/cifar")
    runs_parts, curve_parts = [], []
    for i, raw in enumerate(dirs):
        folder = Path(raw)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such results folder; run `harness run SUITE` first")
        runs = read_runs(folder)
        if runs.empty:
            raise UserError(
                f"{folder}: holds no finished runs (no {folder / 'runs'}/*.parquet); "
                "run `harness run SUITE` first"
            )
        runs_parts.append(runs.assign(_source=i))
        curve_parts.append(read_curves(folder).assign(_source=i))
    runs = pd.concat(runs_parts, ignore_index=True)
    curves = pd.concat(curve_parts, ignore_index=True)
    runs = latest_per_cell(runs).reset_index(drop=True)
    keep = pd.MultiIndex.from_frame(runs[["cell_id", "_source"]])
    curves = curves[pd.MultiIndex.from_frame(curves[["cell_id", "_source"]]).isin(keep)]
    runs = runs.drop(columns="_source").reset_index(drop=True)
    curves = curves.drop(columns="_source").reset_index(drop=True)
    return Results(runs=runs, curves=curves, dirs=tuple(Path(d) for d in dirs))


def expand_aliases(runs: pd.DataFrame) -> pd.DataFrame:
    """Add a copy of each row per alias "experiment/optimizer/schedule/seedN", relabelled."""
    base = runs.assign(label=_labels(runs), is_alias=False)
    if runs.empty or "aliases" not in runs:
        return base
    exploded = runs.explode("aliases")
    exploded = exploded[exploded["aliases"].notna()]
    if exploded.empty:
        return base
    # rsplit: an experiment name may hold "/", the last three parts never do.
    parts = exploded["aliases"].astype(str).str.rsplit("/", n=3, expand=True)
    if parts.shape[1] != 4 or parts.isna().any().any():
        bad = exploded["aliases"][parts.isna().any(axis=1)].iloc[0]
        raise UserError(f"alias {bad!r} is not experiment/optimizer/schedule/seedN")
    copies = exploded.assign(
        experiment=parts[0].to_numpy(),
        optimizer=parts[1].to_numpy(),
        schedule=parts[2].to_numpy(),
        seed=pd.to_numeric(parts[3].str.removeprefix("seed"), errors="coerce")
        .fillna(-1)
        .astype("int64")
        .to_numpy(),
        label=exploded["aliases"].to_numpy(),
        is_alias=True,
    )
    return pd.concat([base, copies], ignore_index=True)


def _labels(runs: pd.DataFrame) -> pd.Series:
    if runs.empty:
        return pd.Series([], dtype=object, index=runs.index)
    return (
        runs["experiment"].astype(str)
        + "/"
        + runs["optimizer"].astype(str)
        + "/"
        + runs["schedule"].astype(str)
        + "/seed"
        + runs["seed"].astype(str)
    )


# ---------------------------------------------------------------------------------------------
# Summary


def summary_table(results: Results) -> pd.DataFrame:
    """Per suite and experiment, one row per (schedule, optimizer, model).

    Columns: suite, experiment, schedule, optimizer, model, seeds (cells averaged), updates
    (mean over seeds), paper_updates (the paper's words), test_acc_mean, test_acc_std
    (fractions; std NaN with one seed), paper_test_acc, diff_pp (100 × (mean − paper)),
    wall_clock_s and images_per_s (means per cell), devices, data (which copy of the
    dataset: official, jpeg-derived, ...; accuracies depend on it), not_ok (cells whose status is
    not ok; they are averaged in too) and status ("ok" or e.g. "1 diverged").
    Rows are ordered by suite, experiment, optimizer, model, then updates descending, which
    puts the decaying-lr reference first, as the paper's tables do.
    """
    v = results.views
    if v.empty:
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    v = v.assign(
        _device=v["device_name"].fillna(v["device"]).fillna("?"),
        _bad=(v["status"] != "ok").astype(int),
        _data=v["data_source"].fillna("not recorded"),
    )
    keys = ["suite", "experiment", "schedule", "optimizer", "model"]
    grouped = v.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(
        seeds=("cell_id", "size"),
        updates=("updates", "mean"),
        paper_updates=("paper_updates", "first"),
        test_acc_mean=("final_test_acc", "mean"),
        test_acc_std=("final_test_acc", "std"),
        paper_test_acc=("paper_test_acc", "first"),
        wall_clock_s=("wall_clock_s", "mean"),
        images_per_s=("images_per_s", "mean"),
        devices=("_device", _join_unique),
        data=("_data", _join_unique),
        not_ok=("_bad", "sum"),
    ).reset_index()
    statuses = (
        v[v["_bad"] == 1]
        .groupby(keys, dropna=False, sort=False)["status"]
        .agg(lambda s: ", ".join(f"{n} {k}" for k, n in s.value_counts().sort_index().items()))
        .rename("status")
        .reset_index()
    )
    out = out.merge(statuses, on=keys, how="left")
    out["status"] = out["status"].fillna("ok")
    out["diff_pp"] = 100.0 * (out["test_acc_mean"] - out["paper_test_acc"])
    out = out.sort_values(
        ["suite", "experiment", "optimizer", "model", "updates", "schedule"],
        ascending=[True, True, True, True, False, True],
        kind="stable",
    )
    return out[_SUMMARY_COLUMNS].reset_index(drop=True)


_SUMMARY_COLUMNS = [
    "suite",
    "experiment",
    "schedule",
    "optimizer",
    "model",
    "seeds",
    "updates",
    "paper_updates",
    "test_acc_mean",
    "test_acc_std",
    "paper_test_acc",
    "diff_pp",
    "wall_clock_s",
    "images_per_s",
    "devices",
    "data",
    "not_ok",
    "status",
]


def _join_unique(values: Iterable[object]) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def format_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as display strings: percent accuracies, readable times, paper columns."""
    acc = [
        _pct(m) if (n < 2 or not np.isfinite(s)) else f"{100 * m:.2f} ± {100 * s:.2f}%"
        for m, s, n in zip(
            summary["test_acc_mean"], summary["test_acc_std"], summary["seeds"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "experiment": summary["experiment"],
            "schedule": summary["schedule"],
            "optimizer": summary["optimizer"],
            "model": summary["model"],
            "seeds": summary["seeds"].astype(str),
            "updates": [_count(u) for u in summary["updates"]],
            "paper updates": summary["paper_updates"].fillna("").astype(str),
            "test acc": acc,
            "paper acc": [_pct(p) if _finite(p) else "" for p in summary["paper_test_acc"]],
            "Δ vs paper": [f"{d:+.2f} pp" if _finite(d) else "" for d in summary["diff_pp"]],
            "wall clock": [_duration(s) for s in summary["wall_clock_s"]],
            "images/s": [_count(x) for x in summary["images_per_s"]],
            "device": summary["devices"],
            "data": summary["data"],
            "status": summary["status"],
        }
    )


# ---------------------------------------------------------------------------------------------
# Equivalence


_EQUIVALENCE_COLUMNS = [
    "suite",
    "experiment",
    "optimizer",
    "model",
    "schedule",
    "reference",
    "epochs_compared",
    "acc_gap_after_m1",
    "loss_gap_after_m1",
    "acc_gap_last10",
    "loss_gap_last10",
    "update_ratio",
]


def equivalence_table(results: Results) -> pd.DataFrame:
    """The paper's first claim in numbers: each schedule's curves against decaying lr.

    For each (suite, experiment, optimizer, model) the reference is the schedule whose
    realization is "lr" (if several, the one with the most updates, then by name); a group
    without one yields no rows. Curves are averaged over seeds per epoch number, then every
    other schedule is compared with the reference at each epoch number both have, metric by
    metric (test metrics are NaN on epochs without evaluation and those epochs are skipped).

    Columns: epochs_compared (epoch numbers both have), acc_gap_after_m1 / loss_gap_after_m1
    (largest |Δ test accuracy| as a fraction, |Δ training loss|, over epochs after the
    reference's first milestone; NaN without milestones), acc_gap_last10 / loss_gap_last10
    (the same over the last 10% of the shared epochs, at least one epoch: epoch > E − k with
    E the last shared epoch and k = max(1, ceil(E / 10))), update_ratio (mean updates of the
    schedule / mean updates of the reference).
    """
    v = results.views
    if v.empty:
        return pd.DataFrame(columns=_EQUIVALENCE_COLUMNS)
    v = v.assign(_m1=[_first(m) for m in v["milestones"]])
    keys = [*GROUP, "schedule"]
    info = (
        v.groupby(keys, dropna=False, sort=False)
        .agg(realization=("realization", "first"), updates=("updates", "mean"), m1=("_m1", "min"))
        .reset_index()
    )
    refs = (
        info[info["realization"] == "lr"]
        .sort_values(["updates", "schedule"], ascending=[False, True], kind="stable")
        .drop_duplicates(GROUP)
        .rename(columns={"schedule": "reference", "updates": "ref_updates", "m1": "ref_m1"})
        [[*GROUP, "reference", "ref_updates", "ref_m1"]]
    )  # fmt: skip
    others = info.merge(refs, on=GROUP, how="inner")
    others = others[others["schedule"] != others["reference"]]
    if others.empty:
        return pd.DataFrame(columns=_EQUIVALENCE_COLUMNS)

    # Mean curves over seeds, per epoch number: cells may differ in length, so never by row.
    members = v[[*keys, "cell_id"]].drop_duplicates()
    curves = results.curves[["cell_id", "epoch", "test_acc", "train_loss"]].merge(
        members, on="cell_id", how="inner"
    )
    mean = (
        curves.groupby([*keys, "epoch"], dropna=False, sort=False)[["test_acc", "train_loss"]]
        .mean()
        .reset_index()
    )
    ref_curves = mean.merge(
        refs[[*GROUP, "reference"]].rename(columns={"reference": "schedule"}), on=keys
    ).rename(columns={"schedule": "reference", "test_acc": "ref_acc", "train_loss": "ref_loss"})
    paired = mean.merge(others[[*keys, "reference", "ref_m1"]], on=keys).merge(
        ref_curves, on=[*GROUP, "reference", "epoch"]
    )
    last_epoch = paired.groupby(keys, dropna=False, sort=False)["epoch"].transform("max")
    window = np.maximum(1, np.ceil(last_epoch / 10.0))
    in_last = paired["epoch"] > last_epoch - window
    after_m1 = paired["epoch"] > paired["ref_m1"]  # NaN milestone compares False: no epochs
    acc_gap = (paired["test_acc"] - paired["ref_acc"]).abs()
    loss_gap = (paired["train_loss"] - paired["ref_loss"]).abs()
    gaps = (
        paired[keys]
        .assign(
            epochs_compared=1,
            acc_gap_after_m1=acc_gap.where(after_m1),
            loss_gap_after_m1=loss_gap.where(after_m1),
            acc_gap_last10=acc_gap.where(in_last),
            loss_gap_last10=loss_gap.where(in_last),
        )
        .groupby(keys, dropna=False, sort=False)
        .agg(
            epochs_compared=("epochs_compared", "sum"),
            acc_gap_after_m1=("acc_gap_after_m1", "max"),
            loss_gap_after_m1=("loss_gap_after_m1", "max"),
            acc_gap_last10=("acc_gap_last10", "max"),
            loss_gap_last10=("loss_gap_last10", "max"),
        )
        .reset_index()
    )
    out = others.merge(gaps, on=keys, how="left")
    out["epochs_compared"] = out["epochs_compared"].fillna(0).astype("int64")
    out["update_ratio"] = out["updates"] / out["ref_updates"]
    out = out.sort_values(
        [*GROUP, "update_ratio", "schedule"],
        ascending=[True, True, True, True, False, True],
        kind="stable",
    )
    return out[_EQUIVALENCE_COLUMNS].reset_index(drop=True)


def _first(milestones: object) -> float:
    if milestones is None:
        return math.nan
    seq = list(milestones)  # type: ignore[call-overload]
    return float(seq[0]) if seq else math.nan


def format_equivalence(eq: pd.DataFrame) -> pd.DataFrame:
    """The equivalence table as display strings: accuracy gaps in percentage points."""

    def pp(x: float) -> str:
        return f"{100 * x:.2f} pp" if _finite(x) else "–"

    def loss(x: float) -> str:
        return f"{x:.3g}" if _finite(x) else "–"

    return pd.DataFrame(
        {
            "experiment": eq["experiment"],
            "optimizer": eq["optimizer"],
            "model": eq["model"],
            "schedule": eq["schedule"],
            "vs": eq["reference"],
            "epochs": eq["epochs_compared"].astype(str),
            # No "|" in headers: it would split a markdown column.
            "acc gap after 1st milestone": [pp(x) for x in eq["acc_gap_after_m1"]],
            "loss gap after 1st milestone": [loss(x) for x in eq["loss_gap_after_m1"]],
            "acc gap, last 10%": [pp(x) for x in eq["acc_gap_last10"]],
            "loss gap, last 10%": [loss(x) for x in eq["loss_gap_last10"]],
            "updates ratio": [f"{x:.3g}×" if _finite(x) else "–" for x in eq["update_ratio"]],
        }
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def render(df: pd.DataFrame, fmt: str = "markdown") -> str:
    """`df` as text: markdown (pipe), github, latex, html (tabulate) or csv (pandas).

    Values are shown as given (strings are not re-parsed as numbers); the index is dropped.
    """
    check_format(fmt)
    if fmt == "csv":
        return df.to_csv(index=False)
    # NaN would print as "nan"; None prints as the empty missing value.
    cells = df.astype(object).where(df.notna(), None)
    rows = list(cells.itertuples(index=False, name=None))
    headers = [str(c) for c in df.columns]
    tablefmt = _TABULATE_FORMATS[fmt]
    if fmt == "latex":
        # Escaped here rather than by tabulate so that ±, Δ and × can become math.
        rows = [tuple(_latex_escape(str(v)) if v is not None else v for v in r) for r in rows]
        headers = [_latex_escape(h) for h in headers]
        tablefmt = "latex_raw"
    return tabulate(
        rows,
        headers=headers,
        tablefmt=tablefmt,
        disable_numparse=True,
        missingval="",
        colalign=[_align(df[c]) for c in df.columns] if len(df.columns) else None,
    )


_NUMBERISH = r"^[+\-−]?[\d.,]+(?:\s|%|×|$)"


def _align(column: pd.Series) -> str:
    """Right-align columns whose every non-empty cell reads as a number ("94.3%", "1,200")."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return "right"
    text = column.dropna().astype(str)
    text = text[(text.str.len() > 0) & (text != "–")]
    if text.empty or not text.str.match(_NUMBERISH).all():
        return "left"
    return "right"


def check_format(fmt: str) -> None:
    """`UserError` naming --format unless `fmt` is one of FORMATS."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not known; choose one of {', '.join(FORMATS)}")


class _Doc:
    """Headings, paragraphs and lists in the output format, so sections read natively."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.parts: list[str] = []

    def text(self, s: str) -> str:
        if self.fmt == "latex":
            return _latex_escape(s)
        if self.fmt == "html":
            return html.escape(s)
        return s

    def heading(self, level: int, title: str) -> None:
        t = self.text(title)
        if self.fmt == "latex":
            cmd = ["section", "subsection", "subsubsection"][min(level, 3) - 1]
            self.parts.append(f"\\{cmd}*{{{t}}}")
        elif self.fmt == "html":
            self.parts.append(f"<h{level}>{t}</h{level}>")
        else:
            self.parts.append(f"{'#' * level} {title}")

    def para(self, s: str) -> None:
        t = self.text(s)
        self.parts.append(f"<p>{t}</p>" if self.fmt == "html" else t)

    def items(self, lines: Sequence[str], raw: bool = False) -> None:
        if not lines:
            return
        items = [line if raw else self.text(line) for line in lines]
        if self.fmt == "latex":
            body = "\n".join(f"  \\item {i}" for i in items)
            self.parts.append(f"\\begin{{itemize}}\n{body}\n\\end{{itemize}}")
        elif self.fmt == "html":
            self.parts.append("<ul>\n" + "\n".join(f"<li>{i}</li>" for i in items) + "\n</ul>")
        else:
            self.parts.append("\n".join(f"- {i}" for i in items))

    def table(self, df: pd.DataFrame) -> None:
        self.parts.append(render(df, self.fmt).rstrip("\n"))

    def __str__(self) -> str:
        return "\n\n".join(self.parts) + "\n"


def _latex_escape(s: str) -> str:
    out = []
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
        "Δ": r"$\Delta$",
        "×": r"$\times$",
        "–": "--",
        "−": "-",
    }
    for ch in s:
        out.append(table.get(ch, ch))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# The report


def build_report(
    dirs: Sequence[Path | str],
    fmt: str = "markdown",
    figures_dir: Path | None = None,
    links_relative_to: Path | None = None,
) -> str:
    """The whole report for results folders `dirs`, as text in `fmt`.

    Per suite: the summary table, the equivalence table, figure links (written to
    `figures_dir` when given; markdown image links for markdown/github, plain paths
    otherwise, relative to `links_relative_to` when given) and provenance.
    `fmt="csv"` returns the summary table alone (fractions, every suite) so that the output
    stays one parseable CSV. `UserError` on an unknown format or unusable folders.
    """
    check_format(fmt)
    results = load_results(dirs)
    summary = summary_table(results)
    if fmt == "csv":
        return render(summary, "csv")
    equivalence = equivalence_table(results)
    doc = _Doc(fmt)
    doc.heading(1, "Don't Decay the Learning Rate, Increase the Batch Size: results")
    doc.para(
        "Results folders: "
        + ", ".join(str(d) for d in results.dirs)
        + f". {results.runs['cell_id'].nunique()} cells. Accuracies are final test accuracy "
        "(mean ± std over seeds); Δ vs paper is measured minus paper, in percentage points."
    )
    for suite in sorted(results.runs["suite"].astype(str).unique()):
        doc.heading(2, f"Suite {suite}")
        doc.heading(3, "Summary")
        doc.table(format_summary(summary[summary["suite"] == suite]))
        doc.heading(3, "Equivalence with decaying lr at equal epochs")
        eq = equivalence[equivalence["suite"] == suite]
        if eq.empty:
            doc.para("No experiment has a decaying-lr (realization lr) reference to compare.")
        else:
            doc.para(
                "Curves are means over seeds. A gap is the largest per-epoch |difference| from "
                "the reference (vs) in test accuracy (percentage points) or training loss, "
                "after the first milestone and over the last 10% of epochs; updates ratio is "
                "this schedule's updates over the reference's. The paper's claim: gaps about "
                "the seed-to-seed spread, updates ratio well below 1."
            )
            doc.table(format_equivalence(eq))
        if figures_dir is not None:
            from harness.analysis.figures import write_figures

            paths = write_figures(results, Path(figures_dir), suites=[suite])
            doc.heading(3, "Figures")
            doc.items(_figure_links(paths, fmt, links_relative_to), raw=fmt != "latex")
        doc.heading(3, "Provenance")
        doc.items(provenance_lines(results.runs[results.runs["suite"] == suite]))
    return str(doc)


def _figure_links(paths: Sequence[Path], fmt: str, relative_to: Path | None) -> list[str]:
    links = []
    for path in paths:
        shown = Path(os.path.relpath(path, relative_to)) if relative_to is not None else path
        target = shown.as_posix()
        if fmt in ("markdown", "github"):
            links.append(f"![{path.stem}]({target.replace(' ', '%20')})")
        elif fmt == "html":
            links.append(html.escape(target))
        else:
            links.append(_latex_escape(target))
    return links


def provenance_lines(runs: pd.DataFrame) -> list[str]:
    """Where the numbers came from: devices, versions, commits, dates, data caveats."""
    if runs.empty:
        return []
    lines = []
    devices = runs["device"].fillna("?") + ": " + runs["device_name"].fillna("unknown")
    lines.append(f"Devices (cells): {_counts(devices)}")
    lines.append(f"Precision: {_counts(runs['precision'].fillna('?'))}")
    lines.append(f"torch: {_counts(runs['torch_version'].fillna('?'))}")
    lines.append(f"Python: {_counts(runs['python_version'].fillna('?'))}")
    lines.append(f"harness: {_counts(runs['harness_version'].fillna('?'))}")
    dirty = runs["git_dirty"].map({True: " (dirty)", False: ""}).fillna(" (dirty flag unknown)")
    commits = runs["git_commit"].fillna("unknown").astype(str).str[:10] + dirty
    lines.append(f"git commits: {_counts(commits)}")
    lines.append(f"Hosts: {_counts(runs['hostname'].fillna('?'))}")
    started, finished = runs["started_at"].min(), runs["finished_at"].max()
    if pd.notna(started) or pd.notna(finished):
        lines.append(f"Runs from {_when(started)} to {_when(finished)}")
    statuses = runs["status"].fillna("?")
    lines.append(f"Status: {_counts(statuses)}")
    sources = runs["paper_source"].dropna()
    if not sources.empty:
        lines.append(f"Paper numbers from: {', '.join(sorted(sources.astype(str).unique()))}")
    cifar = runs[runs["dataset"] == "cifar10"]
    if not cifar.empty:
        sources = cifar["data_source"].fillna("not recorded")
        lines.append(f"CIFAR-10 copy: {_counts(sources)}")
        if (sources != "official").any():
            lines.append(
                "Accuracies on a copy other than the official one (e.g. the JPEG-derived, "
                "lossy copy) are comparable between schedules and runs; against the paper's "
                "numbers (official pixels) they carry an unmeasured offset."
            )
    return lines


def _counts(values: pd.Series) -> str:
    counts = values.astype(str).value_counts()
    return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items()))


def _when(t: object) -> str:
    if t is None or pd.isna(t):  # type: ignore[call-overload]
        return "?"
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M UTC")  # type: ignore[arg-type]


def _finite(x: object) -> bool:
    return isinstance(x, int | float | np.number) and bool(np.isfinite(x))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if _finite(x) else "–"


def _count(x: float) -> str:
    if not _finite(x):
        return "–"
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:,.1f}"


def _duration(seconds: float) -> str:
    if not _finite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
