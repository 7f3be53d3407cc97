"""The analysis of results folders: frames of numbers, no text formatting.

Three views of the same run rows, each a DataFrame with fractions for accuracies and seconds
for times (percent and prose are harness.analysis.display's, output formats render's):
- the *summary*: per suite / experiment, one row per (schedule, optimizer, model) with final
  test accuracy over seeds, update count, cost, and the paper's numbers where it gives them;
- the *equivalence* table, the paper's first claim in numbers: how far each schedule's mean
  curves stray from the decaying-lr reference at equal epochs, and how many updates it needs;
- *provenance*: devices, versions, commits and dates behind the numbers, as counts.

A cell that belongs to several experiments (its run row lists the other labels in `aliases`)
is shown under every one of them. Seed statistics and the equivalence verdict are
harness.analysis.seeds', the paper's words read as checks harness.analysis.paper's.
Nothing here trains or imports torch.

Not split: the three views share `Results`, the alias expansion and the grouping keys;
splitting them would pass those between modules.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from harness.analysis.paper import paper_columns
from harness.analysis.recipes import Clash, mark_recipes
from harness.analysis.seeds import add_verdicts, seed_stats
from harness.core.naming import cell_label, parse_label
from harness.core.realizations import REFERENCE
from harness.errors import UserError
from harness.results.store import Skipped, missing_folder, scan_curves, scan_runs, warn_skipped

# One row per (group, schedule): an experiment's grid seen through the paper's lens.
GROUP = ["suite", "experiment", "optimizer", "model"]


@dataclass(frozen=True)
class Results:
    """Run rows (one per cell, newest wins) and the curve rows of exactly those runs.

    `skipped` lists the files of `dirs` that could not be read (each also warned about).
    """

    runs: pd.DataFrame
    curves: pd.DataFrame
    dirs: tuple[Path, ...] = ()
    skipped: tuple[Skipped, ...] = field(default=())
    left_out: int = 0  # rows of cells outside load_results' `cells`

    @cached_property
    def _marked(self) -> tuple[pd.DataFrame, tuple[Clash, ...]]:
        return mark_recipes(expand_aliases(self.runs))

    @property
    def views(self) -> pd.DataFrame:
        """`runs` with one extra row per alias, relabelled, plus `label` and `recipe` columns.

        The copies keep the cell id, numbers and paper fields of the cell they copy. Seeds
        pool only within one recipe (harness.analysis.recipes.mark_recipes): one row per
        label group, recipe and seed, and a label group of several recipes has each
        recipe's schedule renamed to name the fields they differ in.
        """
        return self._marked[0]

    @property
    def clashes(self) -> tuple[Clash, ...]:
        """Label groups whose rows are of several recipes (shown apart)."""
        return self._marked[1]


def latest_per_cell(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id: the one with the newest `finished_at` (a missing time loses)."""
    if runs.empty:
        return runs
    ordered = runs.sort_values("finished_at", kind="stable", na_position="first")
    return ordered.drop_duplicates("cell_id", keep="last").sort_index()


def load_results(dirs: Sequence[Path | str], cells: Collection[str] | None = None) -> Results:
    """Read and merge results folders; `UserError` if one is missing or holds no runs.

    A cell found in several folders keeps its newest run (by `finished_at`) and that run's
    own curves, so merging a re-run folder over an old one shows the re-run. Unreadable
    files are skipped, warned about and listed in `Results.skipped`. `cells` (cell ids, a
    suite's) keeps only those cells' rows; `UserError` if none of them has one.
    """
    if not dirs:
        raise UserError("no results folders given; pass one or more, e.g. results/cifar")
    runs_parts, curve_parts, skipped = [], [], []
    for i, raw in enumerate(dirs):
        folder = Path(raw)
        if not folder.is_dir():
            raise UserError(missing_folder(folder))
        runs, bad_runs = scan_runs(folder)
        curves, bad_curves = scan_curves(folder)
        skipped += [*bad_runs, *bad_curves]
        if runs.empty:
            raise UserError(
                f"{folder}: holds no finished runs (no {folder / 'runs'}/*.parquet); "
                f"`harness run SUITE --results {folder}` writes them"
            )
        runs_parts.append(runs.assign(_source=i))
        curve_parts.append(curves.assign(_source=i))
    warn_skipped(skipped)
    runs = pd.concat(runs_parts, ignore_index=True)
    curves = pd.concat(curve_parts, ignore_index=True)
    runs = latest_per_cell(runs).reset_index(drop=True)
    left_out = 0
    if cells is not None:
        mine = runs["cell_id"].isin(list(cells))
        left_out = int((~mine).sum())
        runs = runs[mine].reset_index(drop=True)
        if runs.empty:
            raise UserError(
                f"{', '.join(str(d) for d in dirs)}: holds no rows of the suite's cells; "
                "run `harness run SUITE` (with the same --set values) first"
            )
    keep = pd.MultiIndex.from_frame(runs[["cell_id", "_source"]])
    curves = curves[pd.MultiIndex.from_frame(curves[["cell_id", "_source"]]).isin(keep)]
    runs = runs.drop(columns="_source").reset_index(drop=True)
    curves = curves.drop(columns="_source").reset_index(drop=True)
    dirs_ = tuple(Path(d) for d in dirs)
    return Results(runs=runs, curves=curves, dirs=dirs_, skipped=tuple(skipped), left_out=left_out)


def expand_aliases(runs: pd.DataFrame) -> pd.DataFrame:
    """Add a copy of each row per alias (a `cell_label`), relabelled from the alias's parts."""
    base = runs.assign(label=_labels(runs), is_alias=False)
    if runs.empty or "aliases" not in runs:
        return base
    exploded = runs.explode("aliases")
    exploded = exploded[exploded["aliases"].notna()]
    if exploded.empty:
        return base
    labels = exploded["aliases"].astype(str).tolist()
    try:
        parts = [parse_label(label) for label in labels]
    except ValueError as err:
        raise UserError(f"alias {err}") from None
    copies = exploded.assign(
        experiment=[p.experiment for p in parts],
        optimizer=[p.optimizer for p in parts],
        schedule=[p.schedule for p in parts],
        seed=np.array([p.seed for p in parts], dtype="int64"),
        label=labels,
        is_alias=True,
    )
    return pd.concat([base, copies], ignore_index=True)


def _labels(runs: pd.DataFrame) -> pd.Series:
    parts = runs[["experiment", "optimizer", "schedule", "seed"]].itertuples(index=False)
    labels = [cell_label(str(e), str(o), str(s), int(n)) for e, o, s, n in parts]
    return pd.Series(labels, dtype=object, index=runs.index)


# ---------------------------------------------------------------------------------------------
# Summary


def summary_table(results: Results) -> pd.DataFrame:
    """Per suite and experiment, one row per (schedule, optimizer, model).

    Columns: suite, experiment, schedule, optimizer, model, seeds (cells averaged), updates
    (mean over seeds), paper_updates (the paper's words), test_acc_mean, test_acc_std
    (fractions; std NaN with one seed), paper_test_acc, diff_pp (100 × (mean − paper)),
    wall_clock_s and images_per_s (means per cell), devices, data (which copy of the
    dataset: official, jpeg-derived, ...; accuracies depend on it), not_ok (cells whose status is
    not ok; they are averaged in too) and status ("ok" or e.g. "1 diverged"); then
    test_acc_n / _min / _max (over finite final accuracies), and paper.paper_columns'
    updates_ok, updates_rule (every seed's count against the paper's words) and
    paper_test_acc_runs (the per-run accuracies quoted in paper_source).
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
        _counts=("updates", list),
        _source=("paper_source", "first"),
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
    stats = seed_stats(v, keys).rename(columns=lambda c: c if c in keys else f"test_acc_{c}")
    out = out.merge(stats[[*keys, "test_acc_n", "test_acc_min", "test_acc_max"]], on=keys)
    out = pd.concat(
        [out, paper_columns(out["paper_updates"], out["_counts"], out["_source"])], axis=1
    )
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
    "test_acc_n",
    "test_acc_min",
    "test_acc_max",
    "updates_ok",
    "updates_rule",
    "paper_test_acc_runs",
]


def _join_unique(values: Iterable[object]) -> str:
    return ", ".join(sorted({str(v) for v in values}))


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
    "final_acc_gap",
    "seeds",
    "pairs",
    "seed_range",
    "pooled_std",
    "verdict",
    "margin",
    "ci_low",
    "ci_high",
    "tost",
    "seeds_needed",
]


def _pairs(v: pd.DataFrame, compared: pd.DataFrame) -> pd.DataFrame:
    """Per compared schedule: its final test accuracy minus the reference's, paired by seed.

    Columns: GROUP, schedule, pairs (seeds both have a final accuracy for), d_mean and d_sd
    (fractions; d_sd NaN below two pairs). The same seed gives both cells the same initial
    weights and data order, so the per-seed difference is the comparison's unit."""
    columns = [*GROUP, "schedule", "seed", "final_test_acc"]
    final = v.dropna(subset=["final_test_acc"]).drop_duplicates(columns[:-1])[columns]
    ref = final.rename(columns={"schedule": "reference", "final_test_acc": "_ref"})
    d = (
        compared[[*GROUP, "schedule", "reference"]]
        .merge(final, on=[*GROUP, "schedule"])
        .merge(ref, on=[*GROUP, "reference", "seed"])
    )
    d = d.assign(_d=d["final_test_acc"] - d["_ref"])
    out = (
        d.groupby([*GROUP, "schedule"], dropna=False, sort=False)
        .agg(pairs=("_d", "size"), d_mean=("_d", "mean"), d_sd=("_d", "std"))
        .reset_index()
    )
    # An accuracy on n test images is a multiple of 1/n, so two pairs can differ by the same
    # amount by rounding alone (cifar-cpu's momentum: -0.50 and -0.50 pp on 2000 images, sd 0,
    # a zero-width interval). sd(d) is floored at the rounding's own sd, 1 / (n sqrt 6): two
    # independent roundings of width 1/n.
    configs = v.drop_duplicates(GROUP).set_index(GROUP)["config"]
    test_size = configs.map(lambda c: dataset_size(c, "test_size"))
    floor = (1.0 / (test_size * math.sqrt(6.0))).rename("_floor").reset_index()
    out = out.merge(floor, on=GROUP, how="left")
    out["d_sd"] = np.fmax(out["d_sd"], out["_floor"].where(out["pairs"] >= 2))
    return out.drop(columns=["_floor"])


def dataset_size(config: object, key: str) -> float:
    """`dataset.<key>` (train_size, test_size) of a run row's resolved config JSON; NaN where
    the row does not say."""
    try:
        size = json.loads(str(config))["dataset"][key]
    except (KeyError, TypeError, ValueError):
        return math.nan
    return float(size) if isinstance(size, int | float) and size > 0 else math.nan


def equivalence_table(results: Results) -> pd.DataFrame:
    """The paper's first claim in numbers: each schedule's curves against decaying lr.

    For each (suite, experiment, optimizer, model) the reference is the schedule whose
    realization is `harness.core.realizations.REFERENCE`, "lr" (if several, the one with the
    most updates, then by name); a group
    without one yields no rows, and so does a group with rows of several recipes under
    one label (`Results.clashes`: which recipe would be compared with which is not known).
    Curves are averaged over seeds per epoch number, then every
    other schedule is compared with the reference at each epoch number both have, metric by
    metric (test metrics are NaN on epochs without evaluation and those epochs are skipped).

    Columns: epochs_compared (epoch numbers both have), acc_gap_after_m1 / loss_gap_after_m1
    (largest |Δ test accuracy| as a fraction, |Δ training loss|, over epochs after the
    reference's first milestone; NaN without milestones), acc_gap_last10 / loss_gap_last10
    (the same over the last 10% of the shared epochs, at least one epoch: epoch > E − k with
    E the last shared epoch and k = max(1, ceil(E / 10))), update_ratio (mean updates of the
    schedule / mean updates of the reference), then the seed yardstick of
    harness.analysis.seeds.add_verdicts: final_acc_gap, seeds, seed_range, pooled_std, verdict,
    and its equivalence test: margin (the smallest `equivalence_margin` of the group's run
    rows, the suite's report.equivalence_margin; the default where none), ci_low, ci_high,
    tost, seeds_needed.
    """
    v = results.views
    mixed = {c.group for c in results.clashes}
    if mixed and not v.empty:  # which recipe of a clash is whose reference is unknowable
        v = v[[tuple(str(x) for x in g) not in mixed for g in v[GROUP].itertuples(index=False)]]
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
        info[info["realization"] == REFERENCE]
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
    margins = (
        v.assign(margin=v["equivalence_margin"].astype(float))
        .groupby(GROUP, dropna=False, sort=False)["margin"]
        .min()
        .reset_index()
    )
    out = add_verdicts(out, seed_stats(v, keys), GROUP, margins, _pairs(v, out))
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


# ---------------------------------------------------------------------------------------------
# Provenance


@dataclass(frozen=True)
class Provenance:
    """Where the numbers came from, as cell counts per value (missing values as "?")."""

    devices: dict[str, int]  # "cuda: NVIDIA H100 80GB HBM3"
    precision: dict[str, int]
    torch: dict[str, int]
    python: dict[str, int]
    harness: dict[str, int]
    commits: dict[tuple[str, bool | None], int]  # (first 10 hex digits, dirty flag)
    hosts: dict[str, int]
    statuses: dict[str, int]
    first_started: pd.Timestamp | None
    last_finished: pd.Timestamp | None
    paper_sources: list[str]
    cifar10_copies: dict[str, int]  # data_source of CIFAR-10 cells; empty without any


def provenance(runs: pd.DataFrame) -> Provenance | None:
    """The provenance of `runs`, or None when there are no runs."""
    if runs.empty:
        return None

    def counts(values: Iterable[object]) -> dict[str, int]:
        return dict(Counter(str(v) for v in values))

    devices = runs["device"].fillna("?") + ": " + runs["device_name"].fillna("unknown")
    dirty = runs["git_dirty"].map(lambda d: None if pd.isna(d) else bool(d))
    commits = runs["git_commit"].fillna("unknown").astype(str).str[:10]
    started, finished = runs["started_at"].min(), runs["finished_at"].max()
    cifar = runs[runs["dataset"] == "cifar10"]
    return Provenance(
        devices=counts(devices),
        precision=counts(runs["precision"].fillna("?")),
        torch=counts(runs["torch_version"].fillna("?")),
        python=counts(runs["python_version"].fillna("?")),
        harness=counts(runs["harness_version"].fillna("?")),
        commits=dict(Counter(zip(commits, dirty, strict=True))),
        hosts=counts(runs["hostname"].fillna("?")),
        statuses=counts(runs["status"].fillna("?")),
        first_started=None if pd.isna(started) else pd.Timestamp(started),
        last_finished=None if pd.isna(finished) else pd.Timestamp(finished),
        paper_sources=sorted(runs["paper_source"].dropna().astype(str).unique()),
        cifar10_copies=counts(cifar["data_source"].fillna("not recorded")),
    )
