"""Seed statistics and the equivalence verdict: the yardstick a claim of equivalence needs.

The paper's first claim is that decaying lr, hybrid and increasing batch reach the same test
accuracy. A gap between two schedules means nothing without the spread between seeds of one
schedule (docs/report.md reads the verdicts). This module owns both halves: the per-schedule
statistics over cells that differ only by seed (n, mean, min, max, std of the final test
accuracy, as fractions), and the verdict that sets a schedule's gap against that spread, with
its rule in `VERDICT_RULE`.

The yardstick is the largest seed range (max − min) among the schedules of one group (suite,
experiment, optimizer, model), reference included. Under the paper's claim every schedule of a
group draws its final accuracy from one distribution, so each schedule's range is a sample of
the same spread, and the largest of them is what a reader of a figure with min-max bands sees.
With two seeds the range is |a − b|, a noisy yardstick: the verdict is a flag to read beside
the numbers, not a test of significance, and the rule says so plainly. The pooled standard
deviation is shown beside it for readers who prefer one.

Beside that flag stands a stated test: a two one-sided test (TOST) of the difference of seed
means against a margin the suite states (`report: {equivalence_margin: ...}`, carried in each
run row; 0.005, half a percentage point, where none is stated), with its rule in `TOST_RULE`,
and the seeds per schedule such a test would need (`seeds_needed`). The t distribution is
scipy's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

WITHIN = "within seed spread"
OUTSIDE = "outside seed spread"
NO_YARDSTICK = "one seed: no yardstick"
NOT_COMPARED = "no final accuracy"

VERDICT_RULE = (
    "Seed-spread description: Δ final acc is the seed-mean final test accuracy of a schedule "
    "minus the reference's. The seed range of a group (experiment, optimizer, model) is the "
    "largest max − min over seeds among its schedules with 2 seeds or more, reference included. A "
    "schedule is within seed "
    "spread when |Δ final acc| ≤ that range, outside when larger, and 'one seed: no "
    "yardstick' when it or the reference has fewer than 2 seeds with a final accuracy; a "
    "group takes the worst verdict of its schedules (outside, then one seed, then no final "
    "accuracy, then within). "
    "This spread column is a description, not a test (with 2 seeds a range calls a true "
    "2-sigma gap 'within' nearly half the time): the paired TOST below decides. Curve gaps "
    "are shown for context; before the first milestone they are 0 by construction (the same "
    "seed, lr and B give the same run) and are no evidence."
)

STAT_COLUMNS = ["n", "mean", "std", "min", "max"]

# The equivalence test (TOST): what a suite states, and what is assumed where it does not.
DEFAULT_MARGIN = 0.005  # a fraction of accuracy: ±0.5 percentage points
ALPHA = 0.05  # each one-sided test's level: a 90% confidence interval
POWER = 0.8  # the power `seeds_needed` plans for
EQUIVALENT = "equivalent"
NOT_SHOWN = "not shown"
DIFFERENT = "different"
NOT_TESTED = "not tested"

TOST_RULE = (
    "Equivalence test (paired TOST): cells are paired by seed (the same seed gives both the "
    "same initial weights and data order), d = a schedule's final test accuracy minus the "
    "reference's for each seed both have, and the 90% confidence interval of the mean d over "
    "those n pairs is mean ± t(0.95, n − 1) · sd(d) / √n. It is 'equivalent' when the "
    "interval lies inside ± the margin (both one-sided tests reject at 5%), 'different' when "
    "it lies wholly beyond the margin, 'not shown' otherwise, and 'not tested' with fewer than "
    "2 pairs; a group takes the worst (different, not shown, not tested, equivalent). The "
    "margin is the suite's report.equivalence_margin ("
    f"{100 * DEFAULT_MARGIN:g} pp where unstated). Seeds needed: the fewest pairs with which "
    f"this test would show equivalence with {POWER:.0%} power if the true difference were 0 "
    "and the true sd(d) the measured one: n ≥ (t(0.95, n − 1) + t(0.9, n − 1))² sd² / "
    "margin². sd(d) is at least 1 / (n_test √6), the sd of the rounding of two accuracies "
    "on n_test test images (equal differences are a rounding, not a certainty). (Before "
    "2026-12-07 this test was unpaired, with the group's pooled seed std; the rounding floor "
    "was added the same day, after cifar-cpu's two momentum pairs, -0.50 and -0.50 pp, gave a "
    "zero-width interval and 'different'.)"
)


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
_WORST_TOST = (DIFFERENT, NOT_SHOWN, NOT_TESTED, EQUIVALENT)


def tost(
    mean: float, n: int, sd: float, margin: float, alpha: float = ALPHA
) -> tuple[float, float, str]:
    """The paired two one-sided tests of TOST_RULE: (CI low, CI high, verdict).

    `mean` and `sd` are those of the n per-seed differences; the interval is the
    (1 − 2·alpha) t-interval of their mean.
    """
    if not (math.isfinite(mean) and math.isfinite(sd) and n >= 2):
        return math.nan, math.nan, NOT_TESTED
    half = float(sps.t.ppf(1.0 - alpha, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if -margin < low and high < margin:
        return low, high, EQUIVALENT
    if low > margin or high < -margin:
        return low, high, DIFFERENT
    return low, high, NOT_SHOWN


def seeds_needed(
    std: float, margin: float, alpha: float = ALPHA, power: float = POWER, most: int = 100_000
) -> float:
    """The fewest pairs n (n ≥ 2) with which the paired TOST at `margin` would have `power`
    to show equivalence when the true difference is 0 and the differences' true sd is `std`.

    The usual planning rule for a paired (one-sample) TOST: n ≥ s² (t(1 − α, n − 1) +
    t(1 − (1 − power)/2, n − 1))² / margin². NaN without a finite std; inf beyond `most`.
    """
    if not math.isfinite(std):
        return math.nan

    def enough(k: int) -> bool:
        dof = k - 1
        q = sps.t.ppf(1.0 - alpha, dof) + sps.t.ppf(1.0 - (1.0 - power) / 2.0, dof)
        return bool(k >= std**2 * q**2 / margin**2)

    z = sps.norm.ppf(1.0 - alpha) + sps.norm.ppf(1.0 - (1.0 - power) / 2.0)
    k = max(2, math.ceil(std**2 * z**2 / margin**2))  # t > z: never more than needed
    while not enough(k):
        k += 1
        if k > most:
            return math.inf
    return float(k)


TOST_COLUMNS = ["margin", "ci_low", "ci_high", "tost", "seeds_needed"]


def add_verdicts(
    eq: pd.DataFrame,
    stats: pd.DataFrame,
    group: list[str],
    margins: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`eq` (a row per schedule vs its reference) with the seed columns appended.

    `stats` is `seed_stats` keyed by `group` + ["schedule"]. Adds: final_acc_gap (schedule
    mean − reference mean, fraction), seeds (the fewer of the two schedules' n), seed_range
    and pooled_std (of the whole group's schedules with n ≥ 2, reference included; NaN
    without any) and verdict; then the test of TOST_RULE: margin (`margins`' column
    "margin" keyed by `group`, DEFAULT_MARGIN where absent), ci_low and ci_high (the 90%
    interval of the mean paired difference, `pairs`' d_mean and d_sd keyed by `group` +
    ["schedule"]), pairs, tost (its verdict) and seeds_needed.
    """
    if eq.empty:
        return eq.assign(
            final_acc_gap=[], seeds=[], seed_range=[], pooled_std=[], verdict=[], pairs=[],
            **{c: [] for c in TOST_COLUMNS},
        ).astype({"seeds": "int64", "pairs": "int64"})  # fmt: skip
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
    spread = spread.drop(columns=["_ss"])
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
    if margins is not None and not margins.empty:
        out = out.merge(margins[[*group, "margin"]], on=group, how="left")
    else:
        out["margin"] = math.nan
    out["margin"] = out["margin"].fillna(DEFAULT_MARGIN).astype(float)
    if pairs is None or pairs.empty:
        out = out.assign(pairs=0, d_mean=math.nan, d_sd=math.nan)
    else:
        out = out.merge(pairs, on=[*group, "schedule"], how="left")
    out["pairs"] = out["pairs"].fillna(0).astype("int64")
    tests = [
        tost(d, int(n), s, m)
        for d, n, s, m in zip(out["d_mean"], out["pairs"], out["d_sd"], out["margin"], strict=True)
    ]
    out["ci_low"] = [t[0] for t in tests]
    out["ci_high"] = [t[1] for t in tests]
    out["tost"] = [t[2] for t in tests]
    out["seeds_needed"] = [
        seeds_needed(s, m) for s, m in zip(out["d_sd"], out["margin"], strict=True)
    ]
    return out.drop(columns=["n", "mean", "_ref_n", "_ref_mean", "_dof", "d_mean", "d_sd"])


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
    "margin",
    "tost",
    "seeds_needed",
]


def group_verdicts(eq: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """One row per group of `add_verdicts`' output: its largest gaps beside its seed spread.

    final_acc_gap is the signed gap of largest magnitude (of largest_gap_schedule); the curve
    gaps are the largest of the group's; seeds the fewest of any schedule compared; verdict
    the worst of the group's (outside, then one seed, then no accuracy, then within); tost
    the worst of the group's tests (different, not shown, not tested, equivalent), margin and
    seeds_needed the group's (one value per group).
    """
    if eq.empty:
        return pd.DataFrame(columns=GROUP_VERDICT_COLUMNS)
    eq = eq.assign(
        _abs=eq["final_acc_gap"].abs(),
        _rank=eq["verdict"].map(_WORST.index),
        _trank=eq["tost"].map(_WORST_TOST.index),
    )
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
            margin=("margin", "first"),
            _trank=("_trank", "min"),
            seeds_needed=("seeds_needed", "max"),
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
    out["tost"] = [_WORST_TOST[i] for i in out["_trank"]]
    return out[GROUP_VERDICT_COLUMNS]
