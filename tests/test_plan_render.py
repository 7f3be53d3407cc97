"""`harness plan`'s tables drawn once per distinct recipe (issue 46, item 6): the same text as
one whole rich table per cell. `_one_table_per_cell` is the code before the change."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

import harness.app.plan as plan
from harness.app.plan import adaptive_caption, print_plan
from harness.config.suite import Cell, Suite, load_suite
from tests.benchmarks.big_suite import write_big_suite
from tests.conftest import SUITES


def _one_table_per_cell(
    suite: Suite, cells: Sequence[Cell], console: Console | None = None
) -> None:
    console = console or Console()
    console.print(f"[bold]{suite.name}[/bold]: {len(cells)} cells ({suite.path})")
    for cell in cells:
        title = f"{cell.cell_id}  {cell.label}"
        if cell.aliases:
            title += f"  (also {', '.join(cell.aliases)})"
        table = Table(title=title, title_justify="left", show_edge=False)
        names = ("epochs", "lr", "batch", "momentum", "noise scale g", "updates", "epochs lost")
        for name in names:
            table.add_column(name, justify="right")
        for p, lost in zip(cell.plan.phases, cell.plan.epochs_lost(), strict=True):
            table.add_row(
                f"{p.start_epoch}-{p.end_epoch}",
                f"{p.lr:.4g}",
                str(p.batch_size),
                f"{p.momentum:g}",
                f"{p.noise_scale:.4g}",
                str(p.updates),
                f"{lost:.3g}",
            )
        paper = f"; paper: {cell.paper.updates}" if cell.paper and cell.paper.updates else ""
        counted = f"{cell.plan.updates} updates in {cell.plan.epochs} epochs{paper}"
        if cell.adaptive is not None:
            counted = adaptive_caption(cell)
        table.caption = (
            f"{counted}; epochs lost: B / (N (1 - m)), the paper's Appendix A estimate of the "
            "epochs the momentum accumulation takes to grow in after each change"
        )
        table.caption_justify = "left"
        console.print(table)


def _text(draw, suite: Suite, width: int, terminal: bool) -> str:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    colors = "truecolor" if terminal else None
    draw(
        suite,
        suite.cells,
        Console(file=out, width=width, force_terminal=terminal, color_system=colors),
    )
    return out.getvalue()


@pytest.mark.parametrize("terminal", [False, True], ids=["plain", "terminal"])
@pytest.mark.parametrize("width", [60, 200])
@pytest.mark.parametrize("name", ["cifar.yaml", "adaptive-cpu.yaml", "imagenet.yaml"])
def test_plan_text_is_one_whole_table_per_cell(name: str, width: int, terminal: bool) -> None:
    suite = load_suite(SUITES / name)
    assert _text(print_plan, suite, width, terminal) == _text(
        _one_table_per_cell, suite, width, terminal
    )


def test_a_grid_draws_one_table_per_recipe(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = write_big_suite(tmp_path, seeds=3)  # 36 cells
    suite = load_suite(path)
    drawn: list[object] = []
    real = plan._phase_table
    with pytest.MonkeyPatch.context() as m:
        m.setattr(plan, "_phase_table", lambda *a: drawn.append(a) or real(*a))
        text = _text(print_plan, suite, 120, False)
    assert len(drawn) == 9  # 12 recipes; nesterov's phases and caption are momentum's
    assert text == _text(_one_table_per_cell, suite, 120, False)
    shown = cli("plan", str(path))
    assert shown.returncode == 0, shown.stderr
    assert all(c.cell_id in shown.stdout for c in suite.cells)
