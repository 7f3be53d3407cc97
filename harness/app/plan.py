"""`harness plan`: what each cell will do, without training (and without importing torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.config.suite import Cell, Suite
from harness.errors import printable
from harness.fsio import shown


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "cell_id": cell.cell_id,
        "experiment": cell.experiment,
        "aliases": list(cell.aliases),
        "model": cell.model_name,
        "optimizer": cell.optimizer_name,
        "optimizer_kind": cell.optimizer.kind,
        "schedule": cell.schedule_name,
        "realization": cell.schedule["realization"],
        "seed": cell.seed,
        "dataset": cell.dataset.name,
        "train_size": cell.plan.train_size,
        "epochs": cell.plan.epochs,
        "updates": cell.plan.updates,
        "phases": [
            {**p.as_dict(), "epochs_lost": lost}
            for p, lost in zip(cell.plan.phases, cell.plan.epochs_lost(), strict=True)
        ],
        "paper": cell.paper.model_dump() if cell.paper else None,
        "adaptive": None if cell.decided is None else adaptive_json(cell),
    }


def adaptive_json(cell: Cell) -> dict[str, Any]:
    """A decided cell's rule and the bounds of its update count (its phases above are the
    plan before any decision)."""
    rule = cell.decided
    assert rule is not None
    most, fewest = rule.bounds()
    return {
        **rule.options(),
        "b_max": rule.b_max,
        "decision_epochs": list(rule.decision_epochs()),
        "updates_min": fewest.updates,
        "updates_max": most.updates,
    }


def plan_json(suite: Suite, cells: Sequence[Cell]) -> dict[str, Any]:
    return {"suite": suite.name, "path": str(suite.path), "cells": [cell_json(c) for c in cells]}


LEGEND = (
    "epochs lost: B / (N (1 - m)), the paper's Appendix A estimate of the epochs the momentum "
    "accumulation takes to grow in after each change"
)


def _stem(cell: Cell) -> str:
    """The cell's label less its seed: cells that differ only by seed share one plan."""
    suffix = f"/seed{cell.seed}"
    return cell.label.removesuffix(suffix)


def print_plan(suite: Suite, cells: Sequence[Cell], console: Console | None = None) -> None:
    """One table per distinct plan (the seeds of one recipe share it, named in its title),
    and the legend once."""
    console = console or Console()
    # Text, never markup: a name or path holding "[/]" or "[red]" is shown as written.
    where = f": {len(cells)} cells ({shown(suite.path)})"
    console.print(Text.assemble((suite.name, "bold"), where), soft_wrap=True)
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for cell in cells:
        rows = tuple(
            (
                f"{p.start_epoch}-{p.end_epoch}",
                f"{p.lr:.4g}",
                str(p.batch_size),
                f"{p.momentum:g}",
                f"{p.noise_scale:.4g}",
                str(p.updates),
                f"{lost:.3g}",
            )
            for p, lost in zip(cell.plan.phases, cell.plan.epochs_lost(), strict=True)
        )
        paper = f"; paper: {cell.paper.updates}" if cell.paper and cell.paper.updates else ""
        counted = f"{cell.plan.updates} updates in {cell.plan.epochs} epochs{paper}"
        if cell.decided is not None:
            counted = cell.decided.caption()
        groups.setdefault((_stem(cell), rows, counted), []).append(cell)
    for (stem, rows, counted), members in groups.items():
        # The title as a line of its own: a table's title wraps at the table's width.
        title = printable(_title(stem, members))
        console.print(title, highlight=False, markup=False, soft_wrap=True)
        table = Table(show_edge=False)
        names = ("epochs", "lr", "batch", "momentum", "noise scale g", "updates", "epochs lost")
        for name in names:
            table.add_column(name, justify="right")
        for row in rows:
            table.add_row(*row)
        table.caption = Text(printable(counted))
        table.caption_justify = "left"
        console.print(table)
    console.print(LEGEND, highlight=False)


def _title(stem: str, members: list[Cell]) -> str:
    if len(members) == 1:
        cell = members[0]
        title = f"{cell.cell_id}  {cell.label}"
        if cell.aliases:
            title += f"  (also {', '.join(cell.aliases)})"
        return title
    seeds = ", ".join(str(c.seed) for c in members)
    ids = ", ".join(c.cell_id for c in members)
    aliases = [a for c in members for a in c.aliases]
    also = f"  (also {', '.join(aliases)})" if aliases else ""
    return f"{stem}  seeds {seeds}: cells {ids}{also}"
