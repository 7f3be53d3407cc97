"""Tier 0 of the regression gate: what training applied, exactly (docs/gate.md).

Per epoch of every cell, the curves' applied values (harness.train.audit) equal the plan the
run row states, and the baseline's checksums, ghost size, weight decay and Nesterov flag are
equal to the current run's; an adaptive cell's decisions are compared as data (its batches
exactly, its B_simple within `B_SIMPLE_RTOL`). The result is a `CheckResult` of
`harness.analysis.gate`, whose rows and verdicts it shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.gate import (
    B_SIMPLE_RTOL,
    ROW_COLUMNS,
    SLACK,
    CheckResult,
    check_row,
    is_missing,
    verdict_of,
)
from harness.core.decided import DecidedSchedule, Decision
from harness.core.rules import ScheduleError
from harness.results.record import AUDIT_COLUMNS

# (applied column, plan column): equal at every epoch of the current run.
PLAN_PAIRS = (
    ("applied_lr", "lr"),
    ("applied_momentum", "momentum"),
    ("applied_batch_size", "batch_size"),
)
# Equal to the baseline's at every epoch: what the plan does not state but the recipe fixes.
BASELINE_EXACT = (
    "applied_weight_decay",
    "applied_nesterov",
    "ghost_size",
    "order_checksum",
    "augment_checksum",
    "label_checksum",
)


def decisions_of(curves: pd.DataFrame, cell_id: str) -> list[Decision]:
    """An adaptive cell's recorded decisions, from its curve rows (a row of epoch e + 1 holds
    the decision made before 0-based epoch e)."""
    epochs = _epochs(curves, cell_id)
    if "decision_batch_size" not in epochs.columns:
        return []
    made = epochs[epochs["decision_batch_size"].notna()]
    return [
        Decision(int(e) - 1, float(b), int(n))
        for e, b, n in zip(made.index, made["decision_b_simple"], made["decision_batch_size"])
    ]


def first_apart(baseline: Sequence[Decision], current: Sequence[Decision]) -> int | None:
    """The 0-based epoch of the first decision whose batch differs between two runs of one
    adaptive cell (None if they decide alike): from there on the two train different plans."""
    for b, c in zip(baseline, current, strict=False):
        if b.epoch != c.epoch or b.batch_size != c.batch_size:
            return min(b.epoch, c.epoch)
    if len(baseline) != len(current):
        longer = baseline if len(baseline) > len(current) else current
        return longer[min(len(baseline), len(current))].epoch
    return None


def compare_applied(
    baseline_curves: pd.DataFrame,
    current_curves: pd.DataFrame,
    labels: Mapping[str, str],
    regenerate: str,
    trained: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
    rules: Mapping[str, DecidedSchedule] | None = None,
) -> CheckResult:
    """Tier 0 for every cell in `labels` (cell_id -> label).

    Per cell, one row per comparison: ok, or moved naming the first epoch that differs
    ("epoch 3") with both values. A baseline without the tier-0 columns (written before they
    existed) is one failure line saying to regenerate it with `regenerate`, not a crash.

    A side without the cell's curves is a "missing" row, never a pass (a deleted or skipped
    curves file would otherwise switch tier 0 off for the cell), as are curves of other epochs
    than the baseline's. `trained` (epochs trained per cell id, from the baseline's and this
    run's rows): a side whose row says it trained no epoch (failed before its first) has no
    curves to miss, and a cell without a baseline row is the runs tier's ("extra").

    `rules`: each adaptive cell's rule (cell_id -> `DecidedSchedule`). For those, exactly:
    the decisions of this run and of the baseline are the rule's for their own recorded
    B_simple (a changed rule fails on the baseline's), and the plan columns are the rule's
    plan of this run's decisions; within `B_SIMPLE_RTOL`: each decision's B_simple against
    the baseline's, up to the first decision whose batch differs. Past that epoch the two
    runs train different plans, so the baseline-exact columns are compared before it only.
    """
    failures: list[str] = []
    if _lacks_audit(baseline_curves, labels):
        failures.append(f"baseline lacks tier-0 columns; regenerate it with `{regenerate}`")
    if _lacks_audit(current_curves, labels):
        failures.append("this run's curves lack tier-0 columns (harness.train.audit did not run)")
    rows: list[dict[str, Any]] = []
    if failures:
        return CheckResult(
            False, pd.DataFrame(rows, columns=ROW_COLUMNS), len(labels), 0, tuple(failures)
        )
    base_trained, cur_trained = trained if trained is not None else ({}, {})
    for cell_id, label in labels.items():
        cur = _epochs(current_curves, cell_id)
        base: pd.DataFrame | None = _epochs(baseline_curves, cell_id)
        if trained is not None and cell_id not in base_trained:
            base = None  # no baseline row: compare() names the cell as extra
        if cur.empty:
            if cur_trained.get(cell_id, 1) > 0:
                rows.append(_no_curves(cell_id, label, base, "current"))
            continue
        for applied, planned in PLAN_PAIRS:
            rows.append(
                _first_mismatch(cell_id, label, f"{applied} vs plan", cur[planned], cur[applied])
            )
        decided = _decided_batches(cur)
        if decided is not None:  # an adaptive cell: each batch is the last decision's
            rows.append(
                _first_mismatch(
                    cell_id,
                    label,
                    "applied_batch_size vs decisions",
                    decided,
                    cur["applied_batch_size"][decided.index],
                )
            )
        rule = (rules or {}).get(cell_id)
        apart = None
        if rule is not None:
            mine = decisions_of(current_curves, cell_id)
            rows += _adaptive_rows(cell_id, label, rule, cur, mine, "this run's")
            if base is not None and not base.empty:
                theirs = decisions_of(baseline_curves, cell_id)
                rows += _adaptive_rows(cell_id, label, rule, None, theirs, "baseline's")
                apart = first_apart(theirs, mine)
                rows.append(_b_simple_row(cell_id, label, theirs, mine, apart))
        if base is None:
            continue
        if base.empty:
            if base_trained.get(cell_id, 1) > 0:
                rows.append(_no_curves(cell_id, label, base, "baseline"))
            continue
        if apart is not None:  # epochs up to the decision's (rows 1..apart) trained alike
            base, cur = base[base.index <= apart], cur[cur.index <= apart]
        if list(base.index) != list(cur.index):
            rows.append(
                check_row(cell_id, label, "curve epochs", _span(base), _span(cur), None, 0, "moved")
            )
        both = pd.merge(base, cur, left_index=True, right_index=True, suffixes=("_b", "_c"))
        for column in BASELINE_EXACT:
            rows.append(
                _first_mismatch(cell_id, label, column, both[f"{column}_b"], both[f"{column}_c"])
            )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    ok = bool((frame["verdict"] == "ok").all())
    return CheckResult(ok=ok, rows=frame, cells=len(labels), checked=len(rows))


def _no_curves(cell_id: str, label: str, base: pd.DataFrame | None, side: str) -> dict[str, Any]:
    """The row of a cell whose `side` ("baseline" or "current") has no curve rows."""
    missing = "no curves"
    if side == "current":
        held = "none" if base is None or base.empty else _span(base)
        return check_row(cell_id, label, "curves", held, missing, None, 0, "missing")
    return check_row(cell_id, label, "curves", missing, "present", None, 0, "missing")


def _span(epochs: pd.DataFrame) -> str:
    """The epochs a cell's curves hold, e.g. "epochs 1-20" (or "epochs 1,3,4")."""
    index = [int(e) for e in epochs.index]
    if index == list(range(index[0], index[0] + len(index))):
        return f"epochs {index[0]}-{index[-1]}"
    return "epochs " + ",".join(str(e) for e in index)


def _adaptive_rows(
    cell_id: str,
    label: str,
    rule: DecidedSchedule,
    epochs: pd.DataFrame | None,
    decisions: Sequence[Decision],
    whose: str,
) -> list[dict[str, Any]]:
    """Exact: `decisions` are the rule's for their recorded B_simple; with `epochs` (this
    run's curves), its plan columns are the rule's plan of those decisions."""
    metric = f"{whose} decisions vs rule"
    try:
        rule.check(decisions)
    except ScheduleError as exc:
        return [check_row(cell_id, label, metric, exc.message, None, None, 0, "moved")]
    previous = rule.batch_size
    for d in decisions:  # rule.check_rule, with the numbers for the table
        want = rule.decide(d.epoch, d.b_simple, previous).batch_size
        if d.batch_size != want:
            recorded, given = f"B {d.batch_size} (epoch {d.epoch + 1})", f"rule's B {want}"
            why = f"B_simple {d.b_simple:.6g}"
            return [check_row(cell_id, label, metric, recorded, given, why, 0, "moved")]
        previous = d.batch_size
    rows = [check_row(cell_id, label, metric, None, None, None, 0, "ok")]
    if epochs is not None:
        plan = rule.plan(decisions)
        index = epochs.index
        for column in ("batch_size", "lr"):
            planned = pd.Series(
                [getattr(plan.phase_at(int(e) - 1), column) for e in index], index=index
            )
            rows.append(
                _first_mismatch(cell_id, label, f"{column} vs rule", planned, epochs[column])
            )
    return rows


def _b_simple_row(
    cell_id: str,
    label: str,
    baseline: Sequence[Decision],
    current: Sequence[Decision],
    apart: int | None,
) -> dict[str, Any]:
    """The largest relative move of a decision's B_simple from the baseline's, over the
    decisions up to the first whose batch differs; moved beyond `B_SIMPLE_RTOL`."""
    worst: tuple[float, Decision, Decision] | None = None
    for b, c in zip(baseline, current, strict=False):
        if apart is not None and b.epoch > apart:
            break
        if math.isnan(b.b_simple) and math.isnan(c.b_simple):
            continue
        scale = max(abs(b.b_simple), 1e-300)
        move = abs(c.b_simple - b.b_simple) / scale if math.isfinite(c.b_simple) else math.inf
        move = math.inf if math.isnan(move) else move
        if worst is None or move > worst[0]:
            worst = (move, b, c)
    if worst is None:
        return check_row(cell_id, label, "decision_b_simple", None, None, None, B_SIMPLE_RTOL, "ok")
    move, b, c = worst
    verdict = verdict_of(move <= B_SIMPLE_RTOL + SLACK)
    metric = f"decision_b_simple (epoch {b.epoch}, relative)"
    return check_row(cell_id, label, metric, b.b_simple, c.b_simple, move, B_SIMPLE_RTOL, verdict)


def _decided_batches(epochs: pd.DataFrame) -> pd.Series | None:
    """An adaptive cell's batch per epoch from its recorded decisions (harness.core.adaptive:
    a decision holds until the next), from its first decision on; None for any other cell."""
    if "decision_batch_size" not in epochs.columns:
        return None
    decided = epochs["decision_batch_size"].astype("Float64").ffill().dropna()
    if decided.empty:
        return None
    return decided.astype("int64")


def _lacks_audit(curves: pd.DataFrame, labels: Mapping[str, str]) -> bool:
    if any(c not in curves.columns for c in AUDIT_COLUMNS):
        return True
    mine = curves[curves["cell_id"].isin(list(labels))]
    return bool(len(mine)) and bool(mine[list(AUDIT_COLUMNS)].isna().all(axis=None))


def _epochs(curves: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    mine = curves[curves["cell_id"] == cell_id]
    return mine.drop_duplicates("epoch", keep="last").set_index("epoch").sort_index()


def _exactly(expected: object, actual: object) -> bool:
    """Equal, NaN never equal; a float32 tensor lr may read back as the float32 rounding."""
    if is_missing(expected) or is_missing(actual):
        return False
    if isinstance(expected, float | np.floating) and isinstance(actual, float | np.floating):
        return bool(actual == expected or actual == float(np.float32(expected)))
    return bool(expected == actual)


def _first_mismatch(
    cell_id: str, label: str, metric: str, expected: pd.Series, actual: pd.Series
) -> dict[str, Any]:
    for epoch, e, a in zip(expected.index, expected, actual, strict=True):
        if not _exactly(_plain(e), _plain(a)):
            return check_row(cell_id, label, metric, e, a, f"epoch {epoch}", 0, "moved")
    return check_row(cell_id, label, metric, None, None, None, 0, "ok")


def _plain(v: object) -> object:
    return v.item() if isinstance(v, np.generic) else v
