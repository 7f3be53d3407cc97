"""`harness plan`: what each cell will do, without training (and without importing torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.segment import Segment, Segments
from rich.table import Table

from harness.config.suite import Cell, Suite


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
        "adaptive": None if cell.adaptive is None else adaptive_json(cell),
    }


def adaptive_json(cell: Cell) -> dict[str, Any]:
    """An adaptive cell's rule and the bounds of its update count (its phases above are the
    plan before any decision: the batch never grows)."""
    rule = cell.adaptive
    assert rule is not None
    most, fewest = rule.bounds()
    return {
        "target": rule.target,
        "every": rule.every,
        "grow_only": rule.grow_only,
        "b_max": rule.b_max,
        "decision_epochs": list(rule.decision_epochs()),
        "updates_min": fewest.updates,
        "updates_max": most.updates,
    }


def adaptive_caption(cell: Cell) -> str:
    """One sentence: the rule, and the updates between its two bounds."""
    rule = cell.adaptive
    assert rule is not None
    most, fewest = rule.bounds()
    every = "every epoch" if rule.every == 1 else f"every {rule.every} epochs"
    clamp = "never falling" if rule.grow_only else f"never below {rule.batch_size}"
    return (
        f"adaptive: B = {rule.target:g} x the measured B_simple, decided {every} from epoch "
        f"{rule.every}, a multiple of {rule.ghost} up to b_max {rule.b_max}, {clamp}; once B "
        "reaches b_max the lr makes what the batch leaves of the schedule's drops. Between "
        f"{fewest.updates} updates (B jumps to b_max at the first decision) and "
        f"{most.updates} (B never grows, the phases shown)"
    )


def plan_json(suite: Suite, cells: Sequence[Cell]) -> dict[str, Any]:
    return {"suite": suite.name, "path": str(suite.path), "cells": [cell_json(c) for c in cells]}


def print_plan(suite: Suite, cells: Sequence[Cell], console: Console | None = None) -> None:
    """One rich table per cell. Cells of one recipe but the seed have the same phases and
    caption: the table under the title is drawn once per distinct (rows, caption) and reused,
    only each title drawn per cell, so a 10,000-cell grid of 12 recipes draws 12 tables
    instead of 10,000 (issue 46: 97 % of `plan`'s 25 s there, 2.5 ms a table). The text is
    the same as one whole table per cell (tests/test_plan_render.py)."""
    console = console or Console()
    console.print(f"[bold]{suite.name}[/bold]: {len(cells)} cells ({suite.path})")
    drawn: dict[tuple[object, ...], tuple[list[Segment], int]] = {}
    for cell in cells:
        title = f"{cell.cell_id}  {cell.label}"
        if cell.aliases:
            title += f"  (also {', '.join(cell.aliases)})"
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
        if cell.adaptive is not None:
            counted = adaptive_caption(cell)
        caption = (
            f"{counted}; epochs lost: B / (N (1 - m)), the paper's Appendix A estimate of the "
            "epochs the momentum accumulation takes to grow in after each change"
        )
        key = (rows, caption)
        if key not in drawn:
            body = list(console.render(_phase_table(rows, caption), console.options))
            width = max(
                (Segment.get_line_length(line) for line in Segment.split_lines(body)), default=0
            )
            drawn[key] = (body, width)
        body, width = drawn[key]
        # The title as rich.table.Table draws it: markup read, left-justified at the table's width.
        options = console.options.update(width=width, highlight=False, height=None, justify="left")
        text = console.render_str(title, style="table.title", highlight=False)
        console.print(Segments([*console.render(text, options), *body]))


def _phase_table(rows: Sequence[Sequence[str]], caption: str) -> Table:
    table = Table(show_edge=False)
    names = ("epochs", "lr", "batch", "momentum", "noise scale g", "updates", "epochs lost")
    for name in names:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    table.caption = caption
    table.caption_justify = "left"
    return table
