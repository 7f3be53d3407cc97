"""Names of cells, shared by every layer that shows or parses one (suite, report, check).

A cell's *label* is "experiment/optimizer/schedule/seedN". An experiment name may hold "/",
the last three parts never do, so a label splits from the right.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple


class Label(NamedTuple):
    """The parts of a cell's label, as `parse_label` splits it."""

    experiment: str
    optimizer: str
    schedule: str
    seed: int


def config_id(config: dict[str, Any]) -> str:
    """A cell's id: the first 12 hex digits of the SHA-256 of its resolved configuration as
    canonical JSON (sorted keys, no spaces). The one rule: `Cell.cell_id` makes ids by it and
    `harness.results.store.read_rows` checks every run row's stored config against it, so a
    row whose id was edited to another cell's is no row of that cell."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cell_label(experiment: str, optimizer: str, schedule: str, seed: int) -> str:
    """The cell's human-readable name, unique within a suite."""
    return f"{experiment}/{optimizer}/{schedule}/seed{seed}"


def parse_label(label: str) -> Label:
    """The parts of `cell_label`'s output; `ValueError` if `label` is not one."""
    parts = label.rsplit("/", 3)
    if len(parts) != 4 or not parts[3].startswith("seed"):
        raise ValueError(f"{label!r} is not experiment/optimizer/schedule/seedN")
    try:
        seed = int(parts[3].removeprefix("seed"))
    except ValueError:
        raise ValueError(f"{label!r} is not experiment/optimizer/schedule/seedN") from None
    return Label(parts[0], parts[1], parts[2], seed)
