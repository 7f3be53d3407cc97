"""Trust, third pass (issue 39 items 3, 8, 9, 10, 11, 12): data files, checkpoints and the
adaptive gate that fooled the harness or stopped it with a traceback, through the real CLI.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def one_line_error(result, *needles: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback), holding `needles`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


TINY = """\
name: tiny
dataset: {dataset}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], factor: 2, batch_size: 16}}
schedules:
  decaying: {{realization: lr}}
training: {{ghost_batch_size: 8}}
execution: {{eval_batch_size: 32}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [decaying], seeds: [0]}}
"""


def _tiny_suite(folder: Path, dataset: str) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(dataset=dataset))
    return path


# --- 39.3: class labels are integers in 0..classes-1 ------------------------------------------


def _cifar_folder(root: Path, labels: object, per_batch: int = 16) -> Path:
    """A CIFAR-10 folder whose first training batch holds `labels` (the others are fine)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = labels if name == "data_batch_1" else [int(v) for v in np.arange(per_batch) % 10]
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": y}, protocol=3))
    return root


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ([1.7] * 16, "floats"),  # was cut to 1 and trained "ok" with a loss of 0.0000
        (["cat"] * 16, "strings"),
        ([10**30] + [0] * 15, "outside 0..9"),
        ({i: 0 for i in range(16)}, "a dict"),
        ([True] * 16, "booleans"),
        ([0] * 15, "one label per image"),
    ],
)
def test_cifar_labels_that_are_not_class_indices_are_one_line(tmp_path, labels, says):
    data = _cifar_folder(tmp_path / "data", labels)
    suite = _tiny_suite(tmp_path, "{name: cifar10, train_size: 16, test_size: 16}")
    results = tmp_path / "results"
    result = run_cli("run", str(suite), "--results", str(results), "--data", str(data))
    one_line_error(result, "data_batch_1", "'labels'", says, "integers 0..9")
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_arrays_labels_that_are_not_integers_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, train_x=x, train_y=np.full(32, 1.7), test_x=x, test_y=np.arange(32) % 3)
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 32}}"
    suite = _tiny_suite(tmp_path, dataset)
    result = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")
    one_line_error(result, "dataset.path", "train_y", "floats", "integers 0..classes-1")
