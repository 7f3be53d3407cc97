"""The `harness` command line: plan, run, status, report, check, fingerprint, convert, bench, data.

This package only parses: each command's options, with their help text, are its
documentation (`suite_commands`, `result_commands`, `tool_commands`; shared options in
`options`), and each command calls one function of harness.app (or harness.data) that does the
work. A `UserError` anywhere becomes one line on stderr and exit status 2; torch and matplotlib
are imported only by the commands that need them, so `harness plan` answers at once.
"""

from __future__ import annotations

import sys
import warnings
from typing import TextIO

import typer

from harness.cli import result_commands, suite_commands, tool_commands
from harness.errors import UserError, printable, show_user_error

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Test 'Don't Decay the Learning Rate, Increase the Batch Size' on your hardware.",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch datasets.")
app.add_typer(data_app, name="data")

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
    app.command()(command)
data_app.command("cifar10")(tool_commands.data_cifar10)
data_app.command("cifar100")(tool_commands.data_cifar100)


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
    try:
        app()
    except UserError as exc:
        show_user_error(exc)  # under torchrun, once (rank 0)
        sys.exit(2)
