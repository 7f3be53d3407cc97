"""What `harness run` says before training about rows of other recipes under a suite's labels.

A suite value changed between two runs into one folder leaves the old rows beside the new
ones, under the same labels and with other cell ids (harness.analysis.recipes). They are kept:
deleting results is the user's call, and `harness report SUITE` leaves them out of the tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.analysis.recipes import other_recipes, stale_line
from harness.analysis.tables import expand_aliases
from harness.config.suite import Suite
from harness.core.naming import parse_label
from harness.errors import UserError
from harness.results.paths import runs_dir
from harness.results.store import scan_runs


def suite_recipes(suite: Suite) -> dict[tuple[str, str, str, str, str], dict[str, Any]]:
    """(suite, experiment, optimizer, schedule, model) -> the resolved configuration, for each
    label of each cell (aliases included)."""
    out: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for cell in suite.cells:
        config = cell.resolved_config()
        out[
            suite.name, cell.experiment, cell.optimizer_name, cell.schedule_name, cell.model_name
        ] = config
        for alias in cell.aliases:
            label = parse_label(alias)
            out[suite.name, label.experiment, label.optimizer, label.schedule, cell.model_name] = (
                config
            )
    return out


def stale_recipes_line(suite: Suite, folder: Path) -> str | None:
    """The one line to print before training, or None when the folder holds no such rows.

    Silent in a fan-out worker (its parent said it) and where the folder cannot be read yet:
    the runner reports that itself."""
    if os.environ.get("HARNESS_WORKER") or not runs_dir(folder).is_dir():
        return None
    try:
        runs, _ = scan_runs(folder)  # damaged files: the runner moves them aside and says so
        views = expand_aliases(runs)
    except (UserError, OSError):
        return None
    return stale_line(other_recipes(views, suite_recipes(suite)), folder, suite.path)
