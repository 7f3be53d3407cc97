"""Regression check: does a fresh run of a suite still give its baseline's numbers?

Pure logic over two runs tables (the store's `runs` frames); the CLI trains the suite and
then calls `compare`. What must hold, per cell of the baseline:
- `updates`, `planned_updates` and `plan` are equal exactly: the schedule algebra is
  deterministic, so any change there is a change of the experiment, not noise;
- each metric with a tolerance moves by at most that much (absolute, in the metric's units:
  accuracies as fractions, losses in nats);
- `status` is equal (a cell that now diverges, or no longer does, has moved).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.analysis.render import render
from harness.analysis.tables import latest_per_cell
from harness.core.naming import cell_label
from harness.errors import UserError

EXACT = ("updates", "planned_updates", "plan")
VERDICTS = ("ok", "moved", "missing", "extra")
ROW_COLUMNS = [
    "cell_id",
    "label",
    "metric",
    "baseline",
    "current",
    "delta",
    "tolerance",
    "verdict",
]
# Float slack so that a value moved by exactly the tolerance passes despite rounding.
_SLACK = 1e-12


@dataclass(frozen=True)
class CheckResult:
    """The outcome of `compare`: `ok`, and one row per comparison made."""

    ok: bool
    rows: pd.DataFrame  # ROW_COLUMNS; verdict in VERDICTS
    cells: int  # cells in the baseline
    checked: int  # comparisons made on cells present in both

    @property
    def regressions(self) -> int:
        return int((self.rows["verdict"] != "ok").sum())

    def summary(self) -> str:
        counts = self.rows["verdict"].value_counts()
        detail = ", ".join(f"{counts[v]} {v}" for v in VERDICTS[1:] if counts.get(v, 0))
        line = f"{self.cells} cells, {self.checked} metrics checked, {self.regressions} regressions"
        return f"{line} ({detail})" if detail else line

    def table(self, fmt: str = "github") -> str:
        """Every row that is not ok (what moved and by how much), then the summary line."""
        bad = self.rows[self.rows["verdict"] != "ok"]
        if bad.empty:
            return self.summary() + "\n"
        shown = pd.DataFrame(
            {
                "cell": bad["cell_id"],
                "label": bad["label"],
                "metric": bad["metric"],
                "baseline": [_show(v) for v in bad["baseline"]],
                "current": [_show(v) for v in bad["current"]],
                "delta": [_show(v, signed=True) for v in bad["delta"]],
                "tolerance": [_show(v) for v in bad["tolerance"]],
                "verdict": bad["verdict"],
            }
        )
        return render(shown, fmt).rstrip("\n") + "\n\n" + self.summary() + "\n"


def compare(
    baseline_runs: pd.DataFrame,
    current_runs: pd.DataFrame,
    tolerances: Mapping[str, float | None],
) -> CheckResult:
    """Compare `current_runs` with `baseline_runs`, cell by cell (matched on cell_id).

    For each baseline cell: `updates`, `planned_updates` and `plan` (JSON, compared as parsed
    JSON so only content counts) must be equal; every metric whose tolerance is not None
    must satisfy |current − baseline| ≤ tolerance (both NaN counts as equal, one NaN as
    moved); `status` must be equal. A baseline cell absent from `current_runs` is "missing"
    and an extra cell of `current_runs` absent from the baseline is "extra": BOTH make the
    check fail (an extra cell means the suite no longer expands to the baseline's cells).
    If a frame holds a cell twice, its newest row (by finished_at) is used.
    `UserError` if a tolerance names no numeric runs column.
    """
    metrics = {k: float(v) for k, v in tolerances.items() if v is not None}
    for name in metrics:
        if name not in baseline_runs.columns or not pd.api.types.is_numeric_dtype(
            baseline_runs[name]
        ):
            raise UserError(
                f"check tolerance '{name}' names no numeric column of the runs table; "
                "use final_test_acc, best_test_acc, final_train_loss or final_test_loss"
            )
    base = {str(r["cell_id"]): r for r in latest_per_cell(baseline_runs).to_dict("records")}
    cur = {str(r["cell_id"]): r for r in latest_per_cell(current_runs).to_dict("records")}
    rows: list[dict[str, Any]] = []
    checked = 0
    for cell_id, b in base.items():
        label = _label(b)
        c = cur.get(cell_id)
        if c is None:
            rows.append(_row(cell_id, label, "cell", "present", "absent", None, None, "missing"))
            continue
        delta: object
        for name in EXACT:
            checked += 1
            bv, cv = b[name], c[name]
            if name == "plan":
                same, delta = _same_plan(bv, cv)
            else:
                same = _equal(bv, cv)
                delta = None if same or _missing(bv) or _missing(cv) else int(cv) - int(bv)
            rows.append(_row(cell_id, label, name, bv, cv, delta, 0, _v(same)))
        for name, tol in metrics.items():
            checked += 1
            bf, cf = _float(b[name]), _float(c[name])
            if math.isnan(bf) and math.isnan(cf):
                rows.append(_row(cell_id, label, name, bf, cf, math.nan, tol, "ok"))
                continue
            diff = cf - bf
            same = abs(diff) <= tol + _SLACK  # False when one side is NaN
            rows.append(_row(cell_id, label, name, bf, cf, diff, tol, _v(same)))
        checked += 1
        same = _equal(b["status"], c["status"])
        rows.append(_row(cell_id, label, "status", b["status"], c["status"], None, None, _v(same)))
    for cell_id, c in cur.items():
        if cell_id not in base:
            rows.append(_row(cell_id, _label(c), "cell", "absent", "present", None, None, "extra"))
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    ok = bool((frame["verdict"] == "ok").all())
    return CheckResult(ok=ok, rows=frame, cells=len(base), checked=checked)


def _row(
    cell_id: object,
    label: str,
    metric: str,
    baseline: object,
    current: object,
    delta: object,
    tolerance: object,
    verdict: str,
) -> dict[str, Any]:
    return {
        "cell_id": cell_id,
        "label": label,
        "metric": metric,
        "baseline": baseline,
        "current": current,
        "delta": delta,
        "tolerance": tolerance,
        "verdict": verdict,
    }


def _v(same: bool) -> str:
    return "ok" if same else "moved"


def _label(row: Mapping[Any, Any]) -> str:
    return cell_label(
        str(row["experiment"]), str(row["optimizer"]), str(row["schedule"]), int(row["seed"])
    )


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _equal(a: object, b: object) -> bool:
    if _missing(a) and _missing(b):
        return True
    if _missing(a) or _missing(b):
        return False
    return bool(a == b)


def _float(v: object) -> float:
    return math.nan if _missing(v) else float(v)  # type: ignore[arg-type]


def _same_plan(a: object, b: object) -> tuple[bool, str | None]:
    """Equal plans, and where they first differ ("phases[1].batch_size: 640 → 3200")."""
    if _missing(a) or _missing(b):
        same = _missing(a) and _missing(b)
        return same, None if same else "plan absent on one side"
    try:
        pa_, pb = json.loads(str(a)), json.loads(str(b))
    except json.JSONDecodeError:
        return a == b, None if a == b else "plans differ (not JSON)"
    where = _first_difference(pa_, pb, "plan")
    return where is None, where


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'current' if key in b else 'baseline'}"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} → {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b and type(a) is type(b) else f"{path}: {a!r} → {b!r}"


def _show(v: object, signed: bool = False) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and "int" in str(getattr(v, "dtype", ""))):
        return f"{int(v):+d}" if signed else str(int(v))  # type: ignore[call-overload]
    if isinstance(v, float):
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."
