"""The arguments and options several commands share, each declared once with its help text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SuiteArg = Annotated[
    Path, typer.Argument(metavar="SUITE", help="A suite YAML file, e.g. suites/cifar.yaml.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a suite value by its dotted path, e.g. --set training.weight_decay=0 "
        "or --set 'experiments.0.seeds=[0,1,2]' (repeatable; VALUE is read as YAML).",
    ),
]

OnlyOption = Annotated[
    str | None, typer.Option(help="Only cells whose id or label matches (glob or substring).")
]
ResultsOption = Annotated[
    Path | None,
    typer.Option(
        help="The suite's results folder: runs/ and curves/ go in it (default: runs/<suite>, or "
        "$HARNESS_RESULTS/<suite>; the committed runs are under results/)."
    ),
]
FormatOption = Annotated[
    str, typer.Option("--format", help="markdown, github, latex, html or csv.")
]
DataOption = Annotated[
    Path | None, typer.Option(help="Folder holding cifar-10-batches-py (or $HARNESS_DATA).")
]
