"""Regression check: does a fresh run of a suite still give its baseline's numbers?

Pure logic over two runs tables (the store's `runs` frames); the CLI trains the suite and
then calls `compare`. What must hold, per cell of the baseline:
- `updates`, `planned_updates` and `plan` are equal exactly: the schedule algebra is
  deterministic, so any change there is a change of the experiment, not noise;
- each metric with a tolerance moves by at most that much (absolute, in the metric's units:
  accuracies as fractions, losses in nats);
- `status` is equal (a cell that now diverges, or no longer does, has moved).

The three tiers of the gate (docs/gate.md) meet here, each a function returning a
`CheckResult`, joined by `merge`:
- tier 0, `harness.analysis.gate_applied.compare_applied`: the curves' applied values
  (harness.train.audit) equal the plan per epoch, and the baseline's checksums, ghost size,
  weight decay and Nesterov flag exactly (its own module, on this one's result type and rows);
- the runs comparison above, `compare`, with the suite's per-cell tolerances;
- tier 2, `compare_seed_means`: each schedule's mean over seeds within k × its seed std.
Tier 1 (the float64 fingerprint) trains, so it lives in harness.app.fingerprint.
`environment_warnings` names a change of device, CPU, thread count or torch build.

Not split: the per-cell comparison, the recipe changes, tier 2 and the environment are short
sections that all build rows of the one result type defined here; tier 0, the
largest, is `gate_applied`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.analysis.recipes import describe, differences, recipe_config, tag
from harness.analysis.render import render
from harness.analysis.tables import latest_per_cell
from harness.core.metrics import CELL_METRICS
from harness.core.naming import cell_label
from harness.errors import UserError

EXACT = ("updates", "planned_updates", "plan")
VERDICTS = ("ok", "moved", "recipe changed", "missing", "extra")
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
SLACK = 1e-12

# An adaptive cell's B_simple at each decision, against the baseline's: relative. B_simple is
# a ratio of two float sums over a whole epoch; another thread count or CPU sums them in
# another order, and the difference grows as training goes on. Not measured on two machines
# yet (docs/gate.md, "Adaptive cells"): wide enough for float noise, far below a changed
# meter (a factor in tr(Σ) or |G|² moves it by tens of per cent or more).
B_SIMPLE_RTOL = 0.05


@dataclass(frozen=True)
class CheckResult:
    """The outcome of `compare`: `ok`, and one row per comparison made."""

    ok: bool
    rows: pd.DataFrame  # ROW_COLUMNS; verdict in VERDICTS
    cells: int  # cells in the baseline
    checked: int  # comparisons made on cells present in both
    failures: tuple[str, ...] = ()  # whole-check failures that are no row (each one line)
    notes: tuple[str, ...] = ()  # said beside the table; no regression

    @property
    def regressions(self) -> int:
        return int((self.rows["verdict"] != "ok").sum()) + len(self.failures)

    def summary(self) -> str:
        counts = self.rows["verdict"].value_counts()
        detail = ", ".join(f"{counts[v]} {v}" for v in VERDICTS[1:] if counts.get(v, 0))
        if self.failures:
            detail = ", ".join(filter(None, [detail, f"{len(self.failures)} failed"]))
        line = f"{self.cells} cells, {self.checked} metrics checked, {self.regressions} regressions"
        return f"{line} ({detail})" if detail else line

    def table(self, fmt: str = "github") -> str:
        """Every row that is not ok (what moved and by how much), then the summary line; when
        all is ok, the comparisons with a tolerance (what was compared, and how close), the
        count of the exact ones, then the summary line."""
        bad = self.rows[self.rows["verdict"] != "ok"]
        lead = "".join(f"FAILED: {line}\n" for line in self.failures)
        lead += "".join(f"note: {line}\n" for line in self.notes)
        if bad.empty:
            tolerance = pd.to_numeric(self.rows["tolerance"], errors="coerce")
            ranged = self.rows[tolerance.fillna(0) > 0]
            exact = len(self.rows) - len(ranged)
            if ranged.empty:
                return lead + self.summary() + "\n"
            return (
                lead
                + _shown(ranged, fmt).rstrip("\n")
                + f"\n\nand {exact} exact comparisons (updates, plan, status, what training "
                "applied), all equal\n\n" + self.summary() + "\n"
            )
        return lead + _shown(bad, fmt).rstrip("\n") + "\n\n" + self.summary() + "\n"


def _shown(bad: pd.DataFrame, fmt: str) -> str:
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
    return render(shown, fmt)


def merge(results: Sequence[CheckResult]) -> CheckResult:
    """Several tiers' results as one: every row and failure, ok only if each one is."""
    rows = [r.rows for r in results if not r.rows.empty]
    return CheckResult(
        ok=all(r.ok for r in results),
        rows=pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=ROW_COLUMNS),
        cells=max((r.cells for r in results), default=0),
        checked=sum(r.checked for r in results),
        failures=tuple(f for r in results for f in r.failures),
        notes=tuple(n for r in results for n in r.notes),
    )


def compare(
    baseline_runs: pd.DataFrame,
    current_runs: pd.DataFrame,
    tolerances: Mapping[str, float | None],
    apart: Mapping[str, int] | None = None,
) -> CheckResult:
    """Compare `current_runs` with `baseline_runs`, cell by cell (matched on cell_id).

    `apart`: adaptive cells whose decisions differ from the baseline's (cell_id -> the
    0-based epoch of the first that differs, `first_apart`): their updates and plan follow
    those decisions, which tier 0 checks against the rule and the baseline's B_simple, so
    here their updates must equal their own plan's, exactly, not the baseline's.

    For each baseline cell: `updates`, `planned_updates` and `plan` (JSON, compared as parsed
    JSON so only content counts) must be equal; every metric whose tolerance is not None
    must satisfy |current − baseline| ≤ tolerance (both NaN counts as equal, one NaN as
    moved); `status` must be equal.

    A cell's baseline is only the row of the same recipe and seed (the same cell id: a hash
    of the resolved configuration). A current cell without one whose labels (experiment,
    optimizer, schedule, model, seed) the baseline holds under another recipe is "recipe
    changed", naming the fields that differ: a regression, since a recipe change is what the
    gate exists to catch (regenerate the baseline if it was intended). A baseline row of
    another recipe under the labels of a cell that does have its same-recipe row is stale
    and only noted. Any other baseline cell absent from `current_runs` is "missing" and any
    other current cell absent from the baseline is "extra": BOTH make the check fail (the
    suite no longer expands to the baseline's cells).
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
                f"use {', '.join(CELL_METRICS)}"
            )
    base = {str(r["cell_id"]): r for r in latest_per_cell(baseline_runs).to_dict("records")}
    cur = {str(r["cell_id"]): r for r in latest_per_cell(current_runs).to_dict("records")}
    checked = 0
    matched_labels = {_labels(cur[i]) for i in cur if i in base}
    rows, changed = _changed_recipes(base, cur)
    stale = 0
    for cell_id, b in base.items():
        label = _label(b)
        c = cur.get(cell_id)
        if c is None:
            if _labels(b) in changed:
                continue  # its row is the current cell's "recipe changed"
            if _labels(b) in matched_labels:
                stale += 1
                continue
            rows.append(
                check_row(cell_id, label, "cell", "present", "absent", None, None, "missing")
            )
            continue
        delta: object
        if apart is not None and cell_id in apart:
            checked += 1
            same = _equal(c["updates"], c["planned_updates"])
            metric = f"updates vs own plan (decisions apart from epoch {apart[cell_id]})"
            rows.append(
                check_row(
                    cell_id,
                    label,
                    metric,
                    c["planned_updates"],
                    c["updates"],
                    None,
                    0,
                    verdict_of(same),
                )
            )
        for name in EXACT if apart is None or cell_id not in apart else ():
            checked += 1
            bv, cv = b[name], c[name]
            if name == "plan":
                same, delta = _same_plan(bv, cv)
            else:
                same = _equal(bv, cv)
                delta = None if same or is_missing(bv) or is_missing(cv) else int(cv) - int(bv)
            rows.append(check_row(cell_id, label, name, bv, cv, delta, 0, verdict_of(same)))
        for name, tol in metrics.items():
            checked += 1
            bf, cf = _float(b[name]), _float(c[name])
            if math.isnan(bf) and math.isnan(cf):
                rows.append(check_row(cell_id, label, name, bf, cf, math.nan, tol, "ok"))
                continue
            diff = cf - bf
            same = abs(diff) <= tol + SLACK  # False when one side is NaN
            rows.append(check_row(cell_id, label, name, bf, cf, diff, tol, verdict_of(same)))
        checked += 1
        same = _equal(b["status"], c["status"])
        rows.append(
            check_row(
                cell_id, label, "status", b["status"], c["status"], None, None, verdict_of(same)
            )
        )
    for cell_id, c in cur.items():
        if cell_id not in base and _labels(c) not in changed:
            rows.append(
                check_row(cell_id, _label(c), "cell", "absent", "present", None, None, "extra")
            )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    ok = bool((frame["verdict"] == "ok").all())
    notes = []
    if changed:
        notes.append(CHANGED_NOTE.format(n=len(changed)))
    if stale:
        notes.append(
            f"the baseline also holds {stale} row(s) of other recipes under this suite's "
            "labels; not compared (a cell's baseline is the row of its own recipe)"
        )
    for cell_id, epoch in sorted((apart or {}).items()):
        if cell_id in base and cell_id in cur:
            notes.append(
                f"{_label(cur[cell_id])}: its adaptive decisions differ from the baseline's from "
                f"epoch {epoch + 1} (B_simple within {B_SIMPLE_RTOL:.0%}, see tier 0); its "
                "updates and plan are checked against its own decisions and the rule, the "
                "baseline's exact columns before that epoch only (docs/gate.md)"
            )
    cells = len(base) - stale
    return CheckResult(ok=ok, rows=frame, cells=cells, checked=checked, notes=tuple(notes))


CHANGED = "recipe changed"
CHANGED_NOTE = (
    "{n} cell(s) of this suite have no baseline row of their recipe, only rows of another "
    "under the same labels (recipe changed); if the change is intended, regenerate the "
    "baseline (docs/gate.md)"
)


def _changed_recipes(
    base: Mapping[str, Mapping[Any, Any]], cur: Mapping[str, Mapping[Any, Any]]
) -> tuple[list[dict[str, Any]], set[tuple[str, ...]]]:
    """A "recipe changed" row for each current cell without a baseline row of its own id but
    with one of another recipe under its labels (the fields that differ named); the labels."""
    unmatched_base: dict[tuple[str, ...], list[Mapping[Any, Any]]] = {}
    for cell_id, b in base.items():
        if cell_id not in cur:
            unmatched_base.setdefault(_labels(b), []).append(b)
    rows: list[dict[str, Any]] = []
    changed: set[tuple[str, ...]] = set()
    for cell_id, new in cur.items():
        olds = unmatched_base.get(_labels(new)) if cell_id not in base else None
        if olds:
            changed.add(_labels(new))
            diffs = differences(
                [recipe_config(_newest(olds).get("config")), recipe_config(new.get("config"))]
            )
            before, after = tag(diffs, 0), tag(diffs, 1)
            rows.append(
                check_row(cell_id, _label(new), "recipe", before, after, None, None, CHANGED)
            )
    return rows, changed


def compare_recipes(baseline_runs: pd.DataFrame, planned: pd.DataFrame) -> CheckResult:
    """Before anything trains: the cells about to run (`planned`: cell_id, the labels and the
    resolved `config`, as their rows will hold them) whose recipe differs from the baseline's
    under the same labels. Not ok if any does: training them could only end in "recipe
    changed", so the check stops before it."""
    base = {str(r["cell_id"]): r for r in latest_per_cell(baseline_runs).to_dict("records")}
    cur = {str(r["cell_id"]): r for r in planned.to_dict("records")}
    rows, changed = _changed_recipes(base, cur)
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    notes = (CHANGED_NOTE.format(n=len(changed)),) if changed else ()
    return CheckResult(ok=not rows, rows=frame, cells=len(base), checked=len(cur), notes=notes)


def _newest(rows: Sequence[Mapping[Any, Any]]) -> Mapping[Any, Any]:
    """The row finished last (the baseline's latest recipe under a label); a missing time loses."""
    timed = [r for r in rows if not pd.isna(r.get("finished_at"))]
    return max(timed, key=lambda r: r["finished_at"]) if timed else rows[-1]


def _labels(row: Mapping[Any, Any]) -> tuple[str, ...]:
    """Every name of a row's cell but its recipe: experiment, optimizer, schedule, model, seed."""
    return tuple(str(row.get(k)) for k in ("experiment", "optimizer", "schedule", "model", "seed"))


def check_row(
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


def verdict_of(same: bool) -> str:
    return "ok" if same else "moved"


def _label(row: Mapping[Any, Any]) -> str:
    return cell_label(
        str(row["experiment"]), str(row["optimizer"]), str(row["schedule"]), int(row["seed"])
    )


def labels_of(runs: pd.DataFrame) -> dict[str, str]:
    """cell_id -> its label, for every cell of a runs frame."""
    return {str(r["cell_id"]): _label(r) for r in runs.to_dict("records")}


def epochs_of(runs: pd.DataFrame) -> dict[str, int]:
    """cell_id -> epochs its run row says it trained (the newest row where several)."""
    newest = latest_per_cell(runs)
    return {str(c): int(e) for c, e in zip(newest["cell_id"], newest["epochs"], strict=True)}


def is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _equal(a: object, b: object) -> bool:
    if is_missing(a) and is_missing(b):
        return True
    if is_missing(a) or is_missing(b):
        return False
    return bool(a == b)


def _float(v: object) -> float:
    return math.nan if is_missing(v) else float(v)  # type: ignore[arg-type]


def _same_plan(a: object, b: object) -> tuple[bool, str | None]:
    """Equal plans, and where they first differ ("phases[1].batch_size: 640 → 3200")."""
    if is_missing(a) or is_missing(b):
        same = is_missing(a) and is_missing(b)
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
    if is_missing(v):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and "int" in str(getattr(v, "dtype", ""))):
        return f"{int(v):+d}" if signed else str(int(v))  # type: ignore[call-overload]
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        # Whole numbers in full: checksums and batch sizes come back as floats from a frame
        # that mixes them with empty cells, and rounding would hide which digits differ.
        return f"{int(v):+d}" if signed else str(int(v))
    if isinstance(v, float):
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --- Tier 2: means over seeds -----------------------------------------------------------------


def compare_seed_means(
    baseline_runs: pd.DataFrame,
    current_runs: pd.DataFrame,
    k: float,
    std: Mapping[str, Mapping[str, float]],
) -> CheckResult:
    """Each (experiment, optimizer, schedule)'s mean over the current run's seeds, against the
    baseline's mean over the same seeds: |Δ| ≤ k × std[schedule][metric] for every metric
    that `std` names. The baseline's seeds are its rows of the same cells (recipe and seed),
    never rows of another recipe under the same labels. A group whose seeds the baseline
    lacks (naming the fields where it holds them under another recipe), or whose schedule
    has no measured std, is a failure line saying what to do."""
    keys = ["experiment", "optimizer", "schedule"]
    base = latest_per_cell(baseline_runs)
    cur = latest_per_cell(current_runs)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for key, group in cur.groupby(keys, sort=True):
        exp, opt, sched = (str(k_) for k_ in key)
        seeds = sorted(int(s) for s in group["seed"])
        name = f"{exp}/{opt}/{sched}/seeds{','.join(map(str, seeds))}"
        theirs = base[base["cell_id"].isin(list(group["cell_id"]))]
        if sorted(int(s) for s in theirs["seed"]) != seeds:
            mask = (base[keys] == [exp, opt, sched]).all(axis=1) & base["seed"].isin(seeds)
            others = base[mask & ~base["cell_id"].isin(list(group["cell_id"]))]
            why = ""
            if not others.empty and "config" in base:
                diffs = differences(
                    [
                        recipe_config(others["config"].iloc[-1]),
                        recipe_config(group["config"].iloc[0]),
                    ]
                )
                why = f" of this recipe (it holds them under another: {describe(diffs)})"
            failures.append(
                f"tier 2: the baseline lacks seeds of {name}{why}; run them with "
                f"`harness run SUITE --set 'experiments.N.seeds=[{','.join(map(str, seeds))}]'`"
            )
            continue
        spread = std.get(sched)
        if not spread:
            failures.append(
                f"tier 2: no measured seed std for schedule {sched} in the suite's check.seeds.std"
            )
            continue
        for metric, sd in sorted(spread.items()):
            bm, cm = float(theirs[metric].mean()), float(group[metric].mean())
            tol = k * sd
            same = abs(cm - bm) <= tol + SLACK
            rows.append(
                check_row(
                    f"mean of {len(seeds)}", name, metric, bm, cm, cm - bm, tol, verdict_of(same)
                )
            )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    ok = not failures and bool((frame["verdict"] == "ok").all())
    return CheckResult(ok, frame, len(base), len(rows), tuple(failures))


# --- Where the numbers were made --------------------------------------------------------------

ENVIRONMENT = ("device", "device_name", "torch_version")


def environment_warnings(baseline_runs: pd.DataFrame, current_runs: pd.DataFrame) -> list[str]:
    """One line per provenance column whose values differ between baseline and run.

    The CPU device name carries the model and thread count, so a change of either shows up;
    tolerances measured on one machine say nothing about another, so this is said, not
    silently absorbed.
    """
    lines = []
    for column in ENVIRONMENT:
        if column not in baseline_runs.columns or column not in current_runs.columns:
            continue
        theirs = sorted({str(v) for v in baseline_runs[column].dropna()})
        ours = sorted({str(v) for v in current_runs[column].dropna()})
        if theirs != ours:
            lines.append(
                f"warning: {column} differs: baseline {' | '.join(theirs) or '?'}, "
                f"this run {' | '.join(ours) or '?'}; the tolerances were measured on the "
                "baseline's, so a failure may be the machine, not the recipe"
            )
    return lines
