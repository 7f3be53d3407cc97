"""Seed statistics and the equivalence verdict: the yardstick a claim of equivalence needs.

The paper's first claim is that decaying lr, hybrid and increasing batch reach the same test
accuracy. A gap between two schedules means nothing without the spread between seeds of one
schedule (DESIGN.md: "a gap between schedules is reported beside the spread between seeds of
the same schedule"). This module owns both halves: the per-schedule statistics over cells that
differ only by seed (n, mean, min, max, std of the final test accuracy, as fractions), and the
verdict that sets a schedule's gap against that spread, with its rule in `VERDICT_RULE`.

The yardstick is the largest seed range (max − min) among the schedules of one group (suite,
experiment, optimizer, model), reference included. Under the paper's claim every schedule of a
group draws its final accuracy from one distribution, so each schedule's range is a sample of
the same spread, and the largest of them is what a reader of a figure with min-max bands sees.
With two seeds the range is |a − b|, a noisy yardstick: the verdict is a flag to read beside
the numbers, not a test of significance, and the rule says so plainly. The pooled standard
deviation is shown beside it for readers who prefer one.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

WITHIN = "within seed spread"
OUTSIDE = "outside seed spread"
NO_YARDSTICK = "one seed: no yardstick"
NOT_COMPARED = "no final accuracy"

VERDICT_RULE = (
    "Verdict rule: Δ final acc is the seed-mean final test accuracy of a schedule minus the "
    "reference's. The seed range of a group (experiment, optimizer, model) is the largest "
    "max − min over seeds among its schedules with 2 seeds or more, reference included. A "
    "schedule is within seed "
    "spread when |Δ final acc| ≤ that range, outside when larger, and 'one seed: no "
    "yardstick' when it or the reference has fewer than 2 seeds with a final accuracy; a "
    "group takes the worst verdict of its schedules (outside, then one seed, then no final "
    "accuracy, then within). "
    "With 2 seeds a range is a noisy yardstick: read the verdict beside the numbers. Curve "
    "gaps are shown for context and do not enter the verdict."
)

STAT_COLUMNS = ["n", "mean", "std", "min", "max"]


def seed_stats(runs: pd.DataFrame, keys: list[str], value: str = "final_test_acc") -> pd.DataFrame:
    """Per `keys` group (cells that differ only by seed): n, mean, std, min, max of `value`.

    Only finite values count (a diverged cell's NaN accuracy is not a seed of the spread);
    std is the sample std (ddof 1), NaN with n < 2; a group without any finite value has
    n = 0 and NaN elsewhere.
    """
    finite = runs[value].where(np.isfinite(runs[value].astype(float)))
    grouped = runs.assign(_v=finite).groupby(keys, dropna=False, sort=False)["_v"]
    out = grouped.agg(["count", "mean", "std", "min", "max"]).rename(columns={"count": "n"})
    return out.reset_index()


def pooled_std(ns: pd.Series, stds: pd.Series) -> float:
    """sqrt(Σ (n_i − 1) s_i² / Σ (n_i − 1)) over groups with n_i ≥ 2; NaN without any."""
    use = (ns >= 2) & stds.notna()
    dof = (ns[use] - 1).sum()
    if dof <= 0:
        return math.nan
    return float(math.sqrt(((ns[use] - 1) * stds[use] ** 2).sum() / dof))


def verdict(gap: float, seed_range: float, n: int) -> str:
    """The rule of VERDICT_RULE for one gap; `n` the fewest seeds of the two schedules."""
    if not math.isfinite(gap):
        return NOT_COMPARED
    if n < 2 or not math.isfinite(seed_range):
        return NO_YARDSTICK
    return WITHIN if abs(gap) <= seed_range else OUTSIDE


_WORST = (OUTSIDE, NO_YARDSTICK, NOT_COMPARED, WITHIN)


def add_verdicts(eq: pd.DataFrame, stats: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """`eq` (a row per schedule vs its reference) with the seed columns appended.

    `stats` is `seed_stats` keyed by `group` + ["schedule"]. Adds: final_acc_gap (schedule
    mean − reference mean, fraction), seeds (the fewer of the two schedules' n), seed_range
    and pooled_std (of the whole group's schedules with n ≥ 2, reference included; NaN
    without any) and verdict.
    """
    if eq.empty:
        return eq.assign(
            final_acc_gap=[], seeds=[], seed_range=[], pooled_std=[], verdict=[]
        ).astype({"seeds": "int64"})
    use = (stats["n"] >= 2) & stats["std"].notna()
    dof = (stats["n"] - 1).where(use, 0)
    spread = (
        stats.assign(
            _range=(stats["max"] - stats["min"]).where(use), _dof=dof, _ss=dof * stats["std"] ** 2
        )
        .groupby(group, dropna=False, sort=False)
        .agg(seed_range=("_range", "max"), _dof=("_dof", "sum"), _ss=("_ss", "sum"))
        .reset_index()
    )
    # The pooled std of `pooled_std`, per group; NaN where no schedule has 2 seeds.
    spread["pooled_std"] = np.sqrt(spread["_ss"] / spread["_dof"].where(spread["_dof"] > 0))
    spread = spread.drop(columns=["_dof", "_ss"])
    mine = stats[[*group, "schedule", "n", "mean"]]
    ref = mine.rename(columns={"schedule": "reference", "n": "_ref_n", "mean": "_ref_mean"})
    out = eq.merge(mine, on=[*group, "schedule"], how="left")
    out = out.merge(ref, on=[*group, "reference"], how="left").merge(spread, on=group, how="left")
    out["final_acc_gap"] = out["mean"] - out["_ref_mean"]
    out["seeds"] = np.minimum(out["n"].fillna(0), out["_ref_n"].fillna(0)).astype("int64")
    out["verdict"] = [
        verdict(g, r, n)
        for g, r, n in zip(out["final_acc_gap"], out["seed_range"], out["seeds"], strict=True)
    ]
    return out.drop(columns=["n", "mean", "_ref_n", "_ref_mean"])


GROUP_VERDICT_COLUMNS = [
    "suite",
    "experiment",
    "optimizer",
    "model",
    "reference",
    "schedules",
    "largest_gap_schedule",
    "final_acc_gap",
    "acc_gap_after_m1",
    "acc_gap_last10",
    "loss_gap_last10",
    "seed_range",
    "pooled_std",
    "seeds",
    "verdict",
]


def group_verdicts(eq: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """One row per group of `add_verdicts`' output: its largest gaps beside its seed spread.

    final_acc_gap is the signed gap of largest magnitude (of largest_gap_schedule); the curve
    gaps are the largest of the group's; seeds the fewest of any schedule compared; verdict
    the worst of the group's (outside, then one seed, then no accuracy, then within).
    """
    if eq.empty:
        return pd.DataFrame(columns=GROUP_VERDICT_COLUMNS)
    eq = eq.assign(_abs=eq["final_acc_gap"].abs(), _rank=eq["verdict"].map(_WORST.index))
    out = (
        eq.groupby(group, dropna=False, sort=False)
        .agg(
            reference=("reference", "first"),
            schedules=("schedule", "size"),
            acc_gap_after_m1=("acc_gap_after_m1", "max"),
            acc_gap_last10=("acc_gap_last10", "max"),
            loss_gap_last10=("loss_gap_last10", "max"),
            seed_range=("seed_range", "first"),  # one value per group
            pooled_std=("pooled_std", "first"),
            seeds=("seeds", "min"),
            _rank=("_rank", "min"),
        )
        .reset_index()
    )
    largest = (
        eq.sort_values("_abs", ascending=False, na_position="last", kind="stable")
        .drop_duplicates(group)
        .rename(columns={"schedule": "largest_gap_schedule"})
        [[*group, "largest_gap_schedule", "final_acc_gap"]]
    )  # fmt: skip
    out = out.merge(largest, on=group, how="left")
    out["verdict"] = [_WORST[i] for i in out["_rank"]]
    return out[GROUP_VERDICT_COLUMNS]
