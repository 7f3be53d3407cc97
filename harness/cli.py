"""The `harness` command line: plan, run, report, check, data.

Each command is a thin shell over one module. A `UserError` anywhere becomes one line on
stderr and exit status 2; torch and matplotlib are imported only by the commands that need them,
so `harness plan` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Test 'Don't Decay the Learning Rate, Increase the Batch Size' on your hardware.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets.")
app.add_typer(data_app, name="data")

SuiteArg = Annotated[Path, typer.Argument(help="A suite YAML file, e.g. suites/cifar.yaml.")]


@app.command()
def plan(
    suite: SuiteArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    only: Annotated[
        str | None, typer.Option(help="Only cells whose id or label matches (glob or substring).")
    ] = None,
) -> None:
    """Every cell's schedule (lr, batch, momentum, noise scale per phase) and update count."""
    from harness import plan as plan_module
    from harness.suite import load_suite, select

    loaded = load_suite(suite)
    cells = select(loaded.cells, only)
    if as_json:
        print(json.dumps(plan_module.plan_json(loaded, cells), indent=2))
    else:
        plan_module.print_plan(loaded, cells)


@app.command()
def run(
    suite: SuiteArg,
    results: Annotated[
        Path | None, typer.Option(help="Results folder (default: results/<suite name>).")
    ] = None,
    only: Annotated[
        str | None, typer.Option(help="Only cells whose id or label matches (glob or substring).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, mps (default: cuda if available).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-run cells that already have rows.")] = False,
    max_micro_batch: Annotated[
        int | None,
        typer.Option(help="Largest micro-batch in images (overrides the suite's execution)."),
    ] = None,
    compile_model: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")
    ] = None,
) -> None:
    """Train every cell of SUITE and write its rows to Parquet; skips finished cells."""
    from harness.runner import run_suite
    from harness.suite import load_suite

    loaded = load_suite(suite)
    summary = run_suite(
        loaded,
        results=results,
        only=only,
        device=device,
        data=data,
        force=force,
        max_micro_batch=max_micro_batch,
        compile_model=compile_model,
    )
    if summary.failed:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
