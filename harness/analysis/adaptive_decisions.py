"""The adaptive realization in the report: each adaptive cell's decisions, read from its curves.

An adaptive cell (harness.core.adaptive) chooses its batch at the start of each decision epoch
from the gradient noise scale B_simple it measured since the previous decision; the curves
record each decision (`decision_b_simple`, `decision_batch_size`) on the epoch it began. This
module turns them into one row per cell: the trajectory of (epoch: B_simple → B), where the
batch reached b_max, and the updates that took. The figure of B beside the measured B_simple
per epoch is harness.analysis.figures' noise figure.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.tables import GROUP, Results
from harness.core.realizations import realization_names

DECISION_COLUMNS = [*GROUP, "schedule", "seed", "decisions", "changes", "final_batch", "updates"]

DECISION_RULE = (
    "An adaptive schedule chooses B at the start of each decision epoch as target × B_simple, "
    "the gradient noise scale measured since the previous decision, rounded to whole ghost "
    "batches and clamped (never falling, at most b_max); the lr stays until B reaches b_max and "
    "then makes what the batch leaves of the schedule's drops. Each entry is epoch: measured "
    "B_simple → chosen B, shown for the first decision and wherever B changed (decisions "
    "that kept B are counted, not shown); epochs are 0-based, the first one trained with "
    "the new B."
)


def decisions_table(results: Results) -> pd.DataFrame:
    """One row per adaptive cell (a run whose realization is adaptive and whose curves hold
    decisions): its decisions as (epoch, B_simple, B) tuples, how many changed B, its last B
    and its updates. Empty when there is none."""
    runs = results.runs
    curves = results.curves
    if runs.empty or "decision_batch_size" not in curves.columns:
        return pd.DataFrame(columns=DECISION_COLUMNS)
    adaptive = runs[runs["realization"].isin(realization_names(planned=False))]
    rows = []
    for run in adaptive.itertuples(index=False):
        mine = curves[(curves["cell_id"] == run.cell_id) & curves["decision_batch_size"].notna()]
        mine = mine.drop_duplicates("epoch", keep="last").sort_values("epoch")
        decisions = tuple(
            (int(e) - 1, float(b), int(n))
            for e, b, n in zip(
                mine["epoch"], mine["decision_b_simple"], mine["decision_batch_size"], strict=True
            )
        )
        if not decisions:
            continue
        changes, previous = 0, None
        for _, _, batch in decisions:
            changes += previous is not None and batch != previous
            previous = batch
        rows.append(
            {
                **{k: getattr(run, k) for k in GROUP},
                "schedule": run.schedule,
                "seed": int(str(run.seed)),
                "decisions": decisions,
                "changes": changes,
                "final_batch": decisions[-1][2],
                "updates": int(str(run.updates)),
            }
        )
    out = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    return out.sort_values([*GROUP, "schedule", "seed"], kind="stable").reset_index(drop=True)


def format_decisions(table: pd.DataFrame) -> pd.DataFrame:
    """The report's text of `decisions_table`: the trajectory where B changed."""

    def trajectory(decisions: tuple[tuple[int, float, int], ...]) -> str:
        shown, previous = [], None
        for epoch, b_simple, batch in decisions:
            if batch != previous:
                measured = "–" if math.isnan(b_simple) else f"{b_simple:.0f}"
                shown.append(f"{epoch}: {measured} → {batch}")
            previous = batch
        return "; ".join(shown)

    return pd.DataFrame(
        {
            "experiment": table["experiment"],
            "optimizer": table["optimizer"],
            "schedule": table["schedule"],
            "seed": table["seed"],
            "decisions (epoch: B_simple → B)": [trajectory(d) for d in table["decisions"]],
            "decisions made": [len(d) for d in table["decisions"]],
            "final B": table["final_batch"],
            "updates": table["updates"],
        }
    )
