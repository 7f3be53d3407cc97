"""`harness report`, `harness check`, `harness fingerprint`: the commands that read results.

Only the options live here; the work is `app.report`, `app.check` and `app.fingerprint`'s,
imported when the command runs (`harness report` loads no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import DataOption, FormatOption, OnlyOption, SetOption, SuiteArg


def report(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="FOLDER|SUITE",
            help="Results folders (each what `run --results` wrote) or folders holding them "
            "(default: runs/, every suite folder of your own runs; the project's are under "
            "results/), or a suite YAML file: only the cells it defines now, from runs/<suite "
            "name> unless folders are given too.",
        ),
    ] = None,
    overrides: SetOption = None,
    fmt: FormatOption = "markdown",
    out: Annotated[
        Path | None, typer.Option(help="Write the report to this file instead of stdout.")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option(help="Write PNG figures here (default with --out: figures/ beside it)."),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            help="Also export the rows to tensorboard, wandb or mlflow (repeatable): one "
            "tracker run per cell, its curves by epoch, its run row as summary.",
        ),
    ] = None,
    track_dir: Annotated[
        Path | None,
        typer.Option(
            help="With --track: where local tracker stores go (tb/, wandb/, mlruns/; default: "
            "each results folder's logs/).",
        ),
    ] = None,
) -> None:
    """Tables beside the paper's accuracies and update counts, the equivalence table, figures.

    Seeds pool only within one recipe (the resolved configuration less the seed); rows of
    several recipes under one label are shown apart, with a warning. `harness report SUITE`
    shows only the cells the suite file defines now.
    """
    from harness.app.report import report_command

    report_command(dirs, overrides, fmt, out, figures, tuple(track or ()), track_dir)


def check(
    suite: SuiteArg,
    baseline: Annotated[
        Path, typer.Option(help="Results folder holding the baseline rows, e.g. results/smoke.")
    ],
    results: Annotated[
        Path | None,
        typer.Option(
            help="Where to run the suite; finished rows there are reused "
            "(default: a new folder under runs/check/, kept and named at the end)."
        ),
    ] = None,
    only: OnlyOption = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N, mps.")] = None,
    data: DataOption = None,
    overrides: SetOption = None,
    fmt: FormatOption = "github",
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Tier 2: run every experiment with these seeds (e.g. 0,1,2) and compare each "
            "schedule's mean with the baseline's, within the suite's check.seeds rule."
        ),
    ] = None,
) -> None:
    """CI gate: run SUITE and compare every cell with the baseline (exit 0 ok, 1 regressed).

    Tier 0 (what training applied: exact) and the per-cell tolerances always; tier 2 (means
    over seeds) with --seeds. Tier 1 is `harness fingerprint`. See docs/gate.md.
    """
    from harness.app.check import check_suite

    ok = check_suite(
        suite,
        baseline,
        results=results,
        only=only,
        device=device,
        data=data,
        overrides=overrides,
        fmt=fmt,
        seeds=seeds,
    )
    if not ok:
        raise typer.Exit(1)


def fingerprint(
    update: Annotated[
        bool, typer.Option(help="Rewrite the fingerprint file(s) instead of checking them.")
    ] = False,
    dataset: Annotated[
        str, typer.Option(help="cifar10 (real data, what CI checks), synthetic, or all.")
    ] = "cifar10",
    file: Annotated[
        Path | None,
        typer.Option(help="Fingerprint JSON (default: results/fingerprint/<dataset>.json)."),
    ] = None,
    data: DataOption = None,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads for the run (the numbers must not depend on it).")
    ] = 1,
) -> None:
    """Tier 1 gate: train a tiny float64 cell and compare every step with a committed file.

    Exit 0 if it matches, 1 if anything moved (each difference one line, naming tier 0 or 1).
    An intended recipe change: `harness fingerprint --update --dataset all`; see docs/gate.md.
    """
    from harness.app.fingerprint import fingerprint_command

    if not fingerprint_command(update, dataset, file, data, threads):
        raise typer.Exit(1)
