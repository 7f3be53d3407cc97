"""`harness check`: run a suite into a folder of its own and compare it with a baseline folder.

The command's order of events: the format checked before any training, `--seeds` as one
`--set experiments.N.seeds=[...]` per experiment, the baseline checked and narrowed to the
selected cells (and other recipes under their labels), the recipes compared (a changed one
stops the check before anything trains), the suite run (`app.runner.run_suite`, into a new
folder under runs/check/ kept and named at the end, or --results, whose finished rows are
reused), then the tiers of `analysis.gate` merged into one table. The comparisons
themselves are `analysis.gate`'s; docs/gate.md says what each tier holds.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.analysis.gate import (
    B_SIMPLE_RTOL,
    compare,
    compare_recipes,
    compare_seed_means,
    environment_warnings,
    epochs_of,
    labels_of,
    merge,
)
from harness.analysis.gate_applied import compare_applied, decisions_of, first_apart
from harness.analysis.render import check_format
from harness.app.jobs import train_job
from harness.app.runner import run_suite
from harness.config.suite import Cell, load_suite, select_some
from harness.core.decided import DecidedSchedule
from harness.errors import UserError, printable
from harness.results.paths import default_folder
from harness.results.store import read_curves, read_runs


def check_suite(
    suite: Path,
    baseline: Path,
    *,
    results: Path | None,
    only: str | None,
    device: str | None,
    data: Path | None,
    overrides: list[str] | None,
    fmt: str,
    seeds: str | None,
) -> bool:
    """`harness check`: prints the verdict table; True when nothing regressed."""
    check_format(fmt)  # before training, not after
    overrides = list(overrides or ())
    if seeds is not None:
        overrides += seed_overrides(suite, seeds, overrides)
    loaded = load_suite(suite, overrides=overrides)
    cells = select_some(loaded, only)  # the one --only rule, before the baseline is read
    if not baseline.is_dir():
        raise UserError(
            f"--baseline {baseline}: no such results folder; make one with "
            f"`harness run {suite} --results {baseline}`"
        )
    base_runs = read_runs(baseline)
    if base_runs.empty:
        raise UserError(
            f"--baseline {baseline}: holds no runs (no {baseline / 'runs'}/*.parquet); "
            f"make them with `harness run {suite} --results {baseline}`"
        )
    if results is not None and results.resolve() == baseline.resolve():
        raise UserError(
            "--results: must differ from --baseline, or the check compares a folder with itself"
        )
    ids = {c.cell_id for c in cells}
    if only is not None or seeds is not None:
        # The selected cells' rows, and rows of other recipes under their labels: those are
        # named as a changed recipe, not dropped unseen.
        names = {
            (c.experiment, c.optimizer_name, c.schedule_name, c.model_name, c.seed) for c in cells
        }
        keys = base_runs[["experiment", "optimizer", "schedule", "model", "seed"]]
        named = pd.Series(
            [tuple(k) in names for k in keys.itertuples(index=False)], index=keys.index
        )
        base_runs = base_runs[base_runs["cell_id"].isin(ids) | named]
    # A changed recipe is known from the suite alone: say so before training anything.
    early = compare_recipes(base_runs, planned_rows(cells))
    if not early.ok:
        print(early.table(fmt), end="")
        print(
            f"stopped before training: the baseline {baseline} holds other recipes under these "
            f"cells' labels; regenerate it with `harness run {suite} --results {baseline} "
            "--force` if the change is intended"
        )
        return False
    folder = results if results is not None else fresh_folder(loaded.name)
    run_suite(loaded, results=folder, only=only, device=device, data=data)
    current = read_runs(folder)
    current_curves = read_curves(folder)
    current = current[current["cell_id"].isin(ids)]
    rule = loaded.spec.check
    labels = labels_of(current)
    regenerate = f"harness run {suite} --results {baseline} --force"
    base_curves = read_curves(baseline)
    rules = adaptive_rules(cells)
    apart = {}
    for cell_id in rules:
        epoch = first_apart(
            decisions_of(base_curves, cell_id), decisions_of(current_curves, cell_id)
        )
        if epoch is not None:
            apart[cell_id] = epoch
    tiers = [
        compare_applied(
            base_curves,
            current_curves,
            labels,
            regenerate,
            trained=(epochs_of(base_runs), epochs_of(current)),
            rules=rules,
        ),
        compare(base_runs, current, tolerances=rule.model_dump(exclude={"seeds"}), apart=apart),
    ]
    if rules:
        print(ADAPTIVE_NOTE)
    if seeds is not None:
        if rule.seeds is None:
            raise UserError(f"{suite}: --seeds needs a check.seeds block (k and std per schedule)")
        tiers.append(compare_seed_means(base_runs, current, rule.seeds.k, rule.seeds.std))
    # Labels and values come from the baseline's rows, which someone else may have written.
    for line in environment_warnings(base_runs, current):
        print(printable(line))
    outcome = merge(tiers)
    print(printable(outcome.table(fmt), lines=True), end="")
    print(printable(f"this run's rows: {folder} (`harness report {folder}`)"))
    return outcome.ok


def planned_rows(cells: Sequence[Cell]) -> pd.DataFrame:
    """The cells about to run as their run rows will name them: id, labels, resolved config."""
    return pd.DataFrame(
        [
            {
                "cell_id": c.cell_id,
                "experiment": c.experiment,
                "optimizer": c.optimizer_name,
                "schedule": c.schedule_name,
                "model": c.model_name,
                "seed": c.seed,
                "config": json.dumps(c.resolved_config(), sort_keys=True),
            }
            for c in cells
        ],
        columns=["cell_id", "experiment", "optimizer", "schedule", "model", "seed", "config"],
    )


def fresh_folder(name: str) -> Path:
    """A new folder for one check's run, kept (its path is printed) under the user's results
    root, which git ignores: runs/check/<suite>-XXXX."""
    parent = default_folder("check")
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))


ADAPTIVE_NOTE = (
    "note: adaptive cells: exact: each decision is the rule's for its recorded B_simple (this "
    "run's and the baseline's), the applied batch and plan follow the decisions, and until "
    "the decisions differ everything else equals the baseline's; within "
    f"{B_SIMPLE_RTOL:.0%} (relative): each decision's B_simple against the baseline's "
    "(docs/gate.md, 'Adaptive cells')"
)


def adaptive_rules(cells: Sequence[Cell]) -> dict[str, DecidedSchedule]:
    """cell_id -> the rule of each decided cell among `cells`."""
    rules = {}
    for cell in cells:
        decided = train_job(cell).decided
        if decided is not None:
            rules[cell.cell_id] = decided
    return rules


def seed_overrides(suite: Path, seeds: str, overrides: list[str]) -> list[str]:
    """`--set experiments.N.seeds=[...]` for every experiment of the suite."""
    try:
        values = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(
            f"--seeds {seeds}: expected integers separated by commas, e.g. 0,1,2"
        ) from None
    if not values:
        raise UserError(f"--seeds {seeds}: name at least one seed, e.g. 0,1,2")
    experiments = load_suite(suite, overrides=overrides).spec.experiments
    return [f"experiments.{i}.seeds={values}" for i in range(len(experiments))]
