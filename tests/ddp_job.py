"""Train one cell of a suite with `train_cell` directly, alone or as one process of torchrun.

Used by tests/test_distributed.py: the checkpoint left after the last epoch holds the final
weights, so one-process and N-process runs can be compared parameter by parameter.
Usage: python tests/ddp_job.py SUITE CHECKPOINT MAX_MICRO_BATCH
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from harness.app import jobs
from harness.app.data_loading import load_data
from harness.config.suite import load_suite
from harness.train.loop import train_cell
from harness.train.replica import from_environment, launched_by_torchrun, shutdown


def main() -> None:
    suite_path, checkpoint, micro = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    suite = load_suite(Path(suite_path))
    cell = suite.cells[0]
    replica = from_environment("cpu") if launched_by_torchrun() else None
    execution = jobs.execution(suite.spec.execution, suite.cells, micro, None)
    data, _ = load_data(suite, None, torch.device("cpu"), channels_last=False)
    try:
        result = train_cell(jobs.train_job(cell), data, execution, checkpoint, replica=replica)
    finally:
        shutdown()
    assert result.progress.status == "ok", result.progress.error


if __name__ == "__main__":
    main()
