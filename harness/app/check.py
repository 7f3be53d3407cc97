"""`harness check`: run a suite into a scratch folder and compare it with a baseline folder.

The command's order of events: the format checked before any training, `--seeds` as one
`--set experiments.N.seeds=[...]` per experiment, the baseline checked, the suite run
(`app.runner.run_suite`, finished rows in --results reused), the rows narrowed to the selected
cells (and other recipes under their labels, named as a changed recipe), then the tiers of
`analysis.check` merged into one table. The comparisons themselves are `analysis.check`'s;
docs/gate.md says what each tier holds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.analysis.check import (
    B_SIMPLE_RTOL,
    compare,
    compare_applied,
    compare_seed_means,
    decisions_of,
    environment_warnings,
    first_apart,
    labels_of,
    merge,
)
from harness.analysis.render import check_format
from harness.app.jobs import train_job
from harness.app.runner import run_suite
from harness.config.suite import Cell, load_suite, select_some
from harness.core.adaptive import AdaptiveSchedule
from harness.errors import UserError
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
    with tempfile.TemporaryDirectory(prefix="harness-check-") as scratch:
        folder = results if results is not None else Path(scratch)
        run_suite(loaded, results=folder, only=only, device=device, data=data)
        current = read_runs(folder)
        current_curves = read_curves(folder)
    current = current[current["cell_id"].isin(ids)]
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
        compare_applied(base_curves, current_curves, labels, regenerate, rules),
        compare(base_runs, current, tolerances=rule.model_dump(exclude={"seeds"}), apart=apart),
    ]
    if rules:
        print(ADAPTIVE_NOTE)
    if seeds is not None:
        if rule.seeds is None:
            raise UserError(f"{suite}: --seeds needs a check.seeds block (k and std per schedule)")
        tiers.append(compare_seed_means(base_runs, current, rule.seeds.k, rule.seeds.std))
    for line in environment_warnings(base_runs, current):
        print(line)
    outcome = merge(tiers)
    print(outcome.table(fmt), end="")
    return outcome.ok


ADAPTIVE_NOTE = (
    "note: adaptive cells: exact: each decision is the rule's for its recorded B_simple (this "
    "run's and the baseline's), the applied batch and plan follow the decisions, and until "
    "the decisions differ everything else equals the baseline's; within "
    f"{B_SIMPLE_RTOL:.0%} (relative): each decision's B_simple against the baseline's "
    "(docs/gate.md, 'Adaptive cells')"
)


def adaptive_rules(cells: Sequence[Cell]) -> dict[str, AdaptiveSchedule]:
    """cell_id -> the rule of each adaptive cell among `cells`."""
    rules = {}
    for cell in cells:
        adaptive = train_job(cell).adaptive
        if adaptive is not None:
            rules[cell.cell_id] = adaptive
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
