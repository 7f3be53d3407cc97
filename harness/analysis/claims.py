"""The claims table: each pre-registered claim of the paper decided by its paired test.

A suite's `report.preregistration` (harness.config.schema.PreregistrationSpec, committed before
the rows it judges; docs/paper.md) names each claim's arms, the margin, alpha and the seeds.
Here the rows meet those rules: per claim, the per-seed differences d_s = metric(schedule, s) -
metric(versus, s) of cells paired by seed, their mean and (1 - 2 alpha) t-interval, and the
verdict of the claim's test. Nothing here chooses a rule: a claim whose pre-registered seeds are
not all in is *pending* (its interim numbers shown, no verdict), one without rows *not measured*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import scipy.stats as sps

from harness.config.schema import ClaimSpec, PreregistrationSpec

SUPPORTED = "supported"
NOT_SHOWN = "not shown"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"

CLAIMS_RULE = (
    "Each claim is decided by the test pre-registered in the suite (docs/paper.md): cells paired "
    "by seed, d = the schedule's final test accuracy minus its reference's, in percentage "
    "points; the interval is the {level:.0%} t-interval of the mean d over the pairs. "
    "'equivalent': supported when the interval lies inside ±{margin:g} pp (two one-sided "
    "tests at α = {alpha:g}), contradicted when it lies wholly outside, else not shown. "
    "'lower': supported when the interval lies below 0, contradicted when above 0, else not "
    "shown. A claim with fewer pairs than its {seeds} pre-registered seeds is pending: its "
    "numbers so far, no verdict. 'excludes 0' says whether the interval excludes no "
    "difference at all; power is TOST's at a true difference of 0 with the observed sd."
)


@dataclass(frozen=True)
class ClaimResult:
    """One claim measured: its pairs, their mean difference and interval, and the verdict."""

    claim: ClaimSpec
    pairs: int
    needed: int
    mean_pp: float
    low_pp: float
    high_pp: float
    sd_pp: float
    updates: int | None  # the schedule's optimizer steps (every seed's, when they agree)
    updates_versus: int | None
    power: float
    verdict: str

    @property
    def excludes_zero(self) -> bool | None:
        if not (math.isfinite(self.low_pp) and math.isfinite(self.high_pp)):
            return None
        return self.low_pp > 0 or self.high_pp < 0


def _final(runs: pd.DataFrame, optimizer: str, schedule: str, seeds: set[int]) -> pd.DataFrame:
    """One final row per seed of an arm (a cell shared by several experiments counts once)."""
    if runs.empty:
        return pd.DataFrame()
    ok = runs[
        (runs["optimizer"].astype(str) == optimizer)
        & (runs["schedule"].astype(str) == schedule)
        & (runs["status"].astype(str) == "ok")
        & runs["seed"].isin(seeds)
    ]
    return ok.drop_duplicates("cell_id").drop_duplicates("seed").set_index("seed")


def _updates(rows: pd.Series) -> int | None:
    values = set(rows.dropna().astype(int))
    return values.pop() if len(values) == 1 else None


def tost_power(sd: float, n: int, margin: float, alpha: float) -> float:
    """TOST's power at a true difference of 0 for n pairs of standard deviation sd (the
    t-approximation 2 F(margin / se - t(1 - alpha)) - 1, floored at 0)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 1.0
    dof = n - 1
    se = sd / math.sqrt(n)
    crit = float(sps.t.ppf(1.0 - alpha, dof))
    return max(0.0, 2.0 * float(sps.t.cdf(margin / se - crit, dof)) - 1.0)


def decide(claim: ClaimSpec, low: float, high: float, margin: float) -> str:
    """The pre-registered verdict of one complete claim from its interval (pp)."""
    if claim.test == "equivalent":
        if -margin < low and high < margin:
            return SUPPORTED
        if high < -margin or low > margin:
            return CONTRADICTED
        return NOT_SHOWN
    if high < 0:  # "lower": the paper says the schedule ends below its reference
        return SUPPORTED
    if low > 0:
        return CONTRADICTED
    return NOT_SHOWN


def measure(claim: ClaimSpec, runs: pd.DataFrame, pre: PreregistrationSpec) -> ClaimResult:
    """The claim's pairs in `runs` (a suite's run rows) under the pre-registration `pre`."""
    seeds = set(pre.seeds)
    arm = _final(runs, claim.optimizer, claim.schedule, seeds)
    ref = _final(runs, claim.optimizer, claim.versus, seeds)
    paired = sorted(set(arm.index) & set(ref.index))
    d = (
        (arm.loc[paired, pre.metric] - ref.loc[paired, pre.metric]).astype(float) * 100.0
        if paired
        else pd.Series(dtype=float)
    )
    n = len(d)
    margin = pre.margin * 100.0
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    if n >= 2:
        half = float(sps.t.ppf(1.0 - pre.alpha, n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = math.nan
    if n == 0:
        verdict = NOT_MEASURED
    elif n < len(seeds):
        verdict = f"pending ({n} of {len(seeds)} seeds)"
    else:
        verdict = decide(claim, low, high, margin)
    return ClaimResult(
        claim=claim,
        pairs=n,
        needed=len(seeds),
        mean_pp=mean,
        low_pp=low,
        high_pp=high,
        sd_pp=sd,
        updates=_updates(arm.loc[paired, "updates"]) if paired else None,
        updates_versus=_updates(ref.loc[paired, "updates"]) if paired else None,
        power=tost_power(sd, n, margin, pre.alpha),
        verdict=verdict,
    )


def claims_table(runs: pd.DataFrame, pre: PreregistrationSpec) -> list[ClaimResult]:
    """Every claim of `pre`, in its stated order (then any claim the order leaves out)."""
    rank = {name: i for i, name in enumerate(pre.order)}
    claims = sorted(pre.claims, key=lambda c: rank.get(c.id, len(rank)))
    return [measure(c, runs, pre) for c in claims]


def claims_rule(pre: PreregistrationSpec) -> str:
    return CLAIMS_RULE.format(
        level=1.0 - 2.0 * pre.alpha,
        margin=pre.margin * 100.0,
        alpha=pre.alpha,
        seeds=len(pre.seeds),
    )


def _pp(x: float, signed: bool = True) -> str:
    return "–" if not math.isfinite(x) else (f"{x:+.2f}" if signed else f"{x:.2f}")


def format_claims(results: list[ClaimResult]) -> pd.DataFrame:
    """The claims table as text cells: the paper's words, what was measured, the verdict."""
    rows = []
    for r in results:
        c = r.claim
        if r.pairs >= 2:
            measured = f"{_pp(r.mean_pp)} pp [{_pp(r.low_pp)}, {_pp(r.high_pp)}]"
        elif r.pairs == 1:
            measured = f"{_pp(r.mean_pp)} pp (one pair: no interval)"
        else:
            measured = "–"
        if r.updates is not None and r.updates_versus:
            updates = f"{r.updates} vs {r.updates_versus} ({r.updates / r.updates_versus:.2f}x)"
        else:
            updates = "–"
        excludes = {None: "–", True: "yes", False: "no"}[r.excludes_zero]
        rows.append(
            {
                "claim": c.id + (" (primary)" if c.primary else ""),
                "section": c.section,
                "the paper": c.paper,
                "test": f"{c.test}: {c.optimizer}, {c.schedule} vs {c.versus}",
                "Δ final acc, interval": measured,
                "pairs": f"{r.pairs} of {r.needed}",
                "excludes 0": excludes,
                "power": "–" if not math.isfinite(r.power) else f"{r.power:.2f}",
                "updates": updates,
                "verdict": r.verdict,
            }
        )
    return pd.DataFrame(rows)
