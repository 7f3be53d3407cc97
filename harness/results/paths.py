"""Where a user's runs go by default: `runs/<suite>` (or `$HARNESS_RESULTS/<suite>`).

A user's runs and the project's committed evidence never share a folder: the evidence lives
under `results/` (tracked by git, read by giving `--results results/...` or the folder to
`harness report`), while every command that writes without being told where writes under this
root, which the repository's .gitignore leaves out. So a fresh clone's `harness run SUITE`
trains instead of finding the committed rows finished, and nothing a user runs with the
defaults can modify a tracked file. The root is relative to the working directory, as every
other path a user types is.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "HARNESS_RESULTS"
DEFAULT_ROOT = Path("runs")


def results_root() -> Path:
    """The folder that holds the default results folders: $HARNESS_RESULTS, else ./runs."""
    value = os.environ.get(ROOT_ENV, "").strip()
    return Path(value) if value else DEFAULT_ROOT


def default_folder(name: str) -> Path:
    """A suite's (or `harness bench`'s) results folder when none is given."""
    return results_root() / name
