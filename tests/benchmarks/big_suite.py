"""A suite of 9,996 cells and a results folder for it, the size issue 46 measured plan, status
and report at: 4 optimizers × 3 schedules × 833 seeds, 20 epochs, one row file per cell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness.config.suite import load_suite
from harness.results.store import write_cell
from tests.fakes import FakeExperiment, write_fake_results

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("decaying_lr", "hybrid", "increasing_batch")
SEEDS = 833  # × 4 optimizers × 3 schedules = 9,996 cells

SUITE = """\
name: big
dataset: {{name: synthetic, train_size: 50000, test_size: 10000}}
models:
  wrn16_4: {{name: wrn, depth: 16, width: 4}}
optimizers:
  sgd: {{kind: sgd, lr: 0.1}}
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
  nesterov: {{kind: nesterov, lr: 0.1, momentum: 0.9}}
  adam: {{kind: adam, lr: 0.001}}
schedule: {{epochs: 20, milestones: [6, 12, 16], factor: 5, batch_size: 128}}
schedules:
  decaying_lr: {{realization: lr}}
  hybrid: {{realization: hybrid, batch_drops: 1}}
  increasing_batch: {{realization: batch}}
training: {{ghost_batch_size: 128}}
experiments:
  - name: big
    optimizers: [sgd, momentum, nesterov, adam]
    schedules: [decaying_lr, hybrid, increasing_batch]
    seeds: [{seeds}]
"""


def write_big_suite(folder: Path, seeds: int = SEEDS) -> Path:
    path = folder / "big.yaml"
    path.write_text(SUITE.format(seeds=", ".join(str(s) for s in range(seeds))))
    return path


def write_big_results(suite: Path, results: Path) -> int:
    """One run row and 20 curve rows per cell of `suite`, in one file each as `harness run`
    writes them, under the suite's own cell ids (the numbers are `tests.fakes`'s for the same
    optimizer, schedule and seed). Returns the number of cells."""
    loaded = load_suite(suite)
    seeds = tuple(sorted({c.seed for c in loaded.cells}))
    scratch = results.parent / f"{results.name}-fake"
    write_fake_results(scratch, [FakeExperiment("big", OPTIMIZERS, SCHEDULES, seeds)])
    runs = pq.read_table(scratch / "runs").to_pylist()
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in pq.read_table(scratch / "curves").to_pylist():
        curves.setdefault(row["cell_id"], []).append(row)
    fake_of = {(r["optimizer"], r["schedule"], r["seed"]): r for r in runs}
    for cell in loaded.cells:
        fake = fake_of[(cell.optimizer_name, cell.schedule_name, cell.seed)]
        config = json.dumps(cell.resolved_config(), sort_keys=True)  # the id's own config
        run = {
            **fake,
            "cell_id": cell.cell_id,
            "suite": loaded.name,
            "aliases": [],
            "config": config,
        }
        rows = [
            {**c, "cell_id": cell.cell_id, "suite": loaded.name} for c in curves[fake["cell_id"]]
        ]
        write_cell(results, run, rows)
    return len(loaded.cells)
