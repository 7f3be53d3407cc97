"""Appendix A in the report: the epochs each phase of a schedule loses to momentum's growing in.

The paper (Sec. 4, Appendix A) models the accumulation of SGD with momentum as growing in over
B / (N (1 − m)) epochs after every change of the noise scale, and blames the high-momentum
schedules' lower accuracy on it. This module reads each schedule's planned phases from its run
rows (the `plan` column, with `train_size`) and gives that estimate per phase beside the
phase's epochs (harness.core.schedule.epochs_lost holds the formula).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from harness.analysis.tables import GROUP, Results
from harness.core.schedule import epochs_lost

EPOCHS_LOST_COLUMNS = [
    *GROUP,
    "schedule",
    "seeds",
    "phases",
    "batch_sizes",
    "momenta",
    "epochs_lost",
]

EPOCHS_LOST_RULE = (
    "Epochs lost (the paper's Appendix A, eq. 12): after each change of the noise scale the "
    "momentum accumulation takes about N_lost = B / (N (1 − m)) epochs to grow in, for batch "
    "B, training set size N and momentum m of the phase (m = 0 for plain SGD and Adam). Shown "
    "per phase of the planned schedule, beside the phase's epochs; a phase whose N_lost is a "
    "large part of its epochs trains at a suppressed effective learning rate for much of it."
)


def epochs_lost_table(results: Results) -> pd.DataFrame:
    """One row per (group, schedule, planned phases): the phases and N_lost of each.

    Columns: GROUP, schedule, seeds (the seeds whose rows hold that plan), phases (each
    phase's [start, end) epochs), batch_sizes, momenta, epochs_lost (tuples, one entry per
    phase). Every seed of a planned recipe has one plan, so one row; an adaptive schedule's
    plan is what its decisions made of it, which may differ between seeds: a row per plan.
    Rows without a readable plan are left out.
    """
    v = results.views
    if v.empty:
        return pd.DataFrame(columns=EPOCHS_LOST_COLUMNS)
    rows = []
    for keys, same in v.groupby([*GROUP, "schedule", "plan", "train_size"], sort=False):
        *group, schedule, plan, train_size = keys
        try:
            phases = json.loads(str(plan))
            n = int(str(train_size))
            lost = tuple(epochs_lost(int(p["batch_size"]), n, float(p["momentum"])) for p in phases)
        except (ValueError, TypeError, KeyError, ZeroDivisionError):
            continue
        rows.append(
            {
                **dict(zip(GROUP, group, strict=True)),
                "schedule": schedule,
                "seeds": tuple(sorted({int(s) for s in same["seed"]})),
                "phases": tuple((int(p["start_epoch"]), int(p["end_epoch"])) for p in phases),
                "batch_sizes": tuple(int(p["batch_size"]) for p in phases),
                "momenta": tuple(float(p["momentum"]) for p in phases),
                "epochs_lost": lost,
            }
        )
    out = pd.DataFrame(rows, columns=EPOCHS_LOST_COLUMNS)
    first_seed = out["seeds"].map(min)
    order = out.assign(_seed=first_seed).sort_values([*GROUP, "schedule", "_seed"], kind="stable")
    return out.loc[order.index].reset_index(drop=True)


def format_epochs_lost(lost: pd.DataFrame) -> pd.DataFrame:
    """Appendix A's N_lost per phase (frames of harness.analysis.momentum.epochs_lost_table):
    one cell per schedule, "epochs 0-60: B 3200, m 0.98 → 3.2; ...", and per plan where the
    seeds of a schedule planned differently (an adaptive batch), the schedule naming them."""

    def phases(row: Any) -> str:
        return "; ".join(
            f"{a}-{b}: B {bs}, m {m:g} → {x:.3g}"
            for (a, b), bs, m, x in zip(
                row.phases, row.batch_sizes, row.momenta, row.epochs_lost, strict=True
            )
        )

    def schedule(row: Any, split: bool) -> str:
        if not split:
            return str(row.schedule)
        seeds: tuple[int, ...] = row.seeds
        return f"{row.schedule} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"

    keys = ["suite", "experiment", "optimizer", "model", "schedule"]
    several = lost.duplicated(keys, keep=False).tolist()  # a schedule with several plans
    return pd.DataFrame(
        {
            "experiment": lost["experiment"],
            "optimizer": lost["optimizer"],
            "model": lost["model"],
            "schedule": [
                schedule(r, split)
                for r, split in zip(lost.itertuples(index=False), several, strict=True)
            ],
            "epochs lost per phase (epochs: B, m → N_lost)": [
                phases(r) for r in lost.itertuples(index=False)
            ],
            "largest N_lost": [f"{max(x):.3g}" if x else "–" for x in lost["epochs_lost"]],
        }
    )
