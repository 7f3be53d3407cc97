"""The `harness` command line: plan, run, status, report, check, fingerprint, convert, bench, data.

This package only parses: each command's options, with their help text, are its
documentation (`suite_commands`, `result_commands`, `tool_commands`; shared options in
`options`), and each command calls one function of harness.app (or harness.data) that does the
work. A `UserError` anywhere becomes one line on stderr and exit status 2; torch and matplotlib
are imported only by the commands that need them, so `harness plan` answers at once.
"""

from __future__ import annotations

import inspect
import re
import sys
import warnings
from typing import Annotated, Any, TextIO

import typer
from typer.core import TyperCommand

from harness.allocator import tune_once
from harness.cli import result_commands, suite_commands, tool_commands
from harness.core.datasets import DATASETS
from harness.errors import exit_on_user_error, printable
from harness.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Test 'Don't Decay the Learning Rate, Increase the Batch Size' on your hardware.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets.")
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        print(f"harness {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """Test 'Don't Decay the Learning Rate, Increase the Batch Size' on your hardware."""


class _Command(TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {SUITE}; the usual form, and our docs', is SUITE.
        return [re.sub(r"^\{(.*)\}", r"\1", p) for p in super().collect_usage_pieces(ctx)]


def help_text(doc: str | None) -> str:
    """A docstring as help: its paragraphs (blank-line separated) each one line, so the
    terminal wraps them at its own width, not where the source's lines were broken."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


# In this order in `harness --help`.
for command in (
    suite_commands.plan,
    suite_commands.run,
    suite_commands.status,
    result_commands.report,
    result_commands.check,
    result_commands.fingerprint,
    tool_commands.convert,
    tool_commands.bench,
):
    app.command(cls=_Command, help=help_text(command.__doc__))(command)
for kind in DATASETS.values():  # `harness data NAME DEST`, for each kind that downloads
    if kind.download is not None:
        fetch = tool_commands.data_command(kind)
        data_app.command(kind.name, help=help_text(fetch.__doc__))(fetch)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our own warnings (a damaged file skipped, say) as one line; others as Python shows them."""
    if category.__module__.startswith("harness"):
        print(f"warning: {printable(message)}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    warnings.showwarning = _show_warning
    with exit_on_user_error():  # one line (under torchrun, rank 0's), exit 2
        tune_once()  # before any tensor: large buffers reused, not re-mapped
        app()
