"""The user's own data: `dataset: {name: arrays, path: data.npz}` (issue 27, item 3)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from harness.config.suite import load_suite
from harness.data.arrays import load_arrays
from harness.data.device import DeviceData
from harness.errors import UserError
from tests.conftest import run_cli


def _data(n_train: int = 96, n_test: int = 32, classes: int = 3, nhwc: bool = True, **bad):
    """Learnable images: each class its own mean colour."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % classes
        x = rng.integers(0, 60, (n, 3, 16, 16)) + (y * 60)[:, None, None, None]
        x = x.astype(np.uint8)
        return (x.transpose(0, 2, 3, 1).copy() if nhwc else x), y.astype(np.int64)

    train_x, train_y = split(n_train)
    test_x, test_y = split(n_test)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    return {**arrays, **bad}


def _save(tmp_path: Path, **arrays) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_nhwc_and_nchw_load_alike_and_the_first_n_are_kept(tmp_path: Path) -> None:
    one = load_arrays(_save(tmp_path, **_data(nhwc=True)), classes=3, train_size=64)
    two = load_arrays(_save(tmp_path, **_data(nhwc=False)), classes=3, train_size=64)
    assert one.train_x.shape == (64, 3, 16, 16) and one.test_x.shape == (32, 3, 16, 16)
    assert np.array_equal(one.train_x, two.train_x) and np.array_equal(one.test_y, two.test_y)
    assert one.train_y.dtype == np.int64


def test_mean_and_std_come_from_the_training_images_unless_given(tmp_path: Path) -> None:
    ds = load_arrays(_save(tmp_path, **_data()), classes=3, train_size=96)
    data = DeviceData.from_arrays(ds, torch.device("cpu"))
    expected = ds.train_x.astype(np.float64).mean((0, 2, 3)) / 255
    np.testing.assert_allclose(data.mean.numpy(), expected, rtol=1e-5)
    given = DeviceData.from_arrays(ds, torch.device("cpu"), stats=((0.5,) * 3, (0.25,) * 3))
    assert given.mean.tolist() == [0.5] * 3 and given.std.tolist() == [0.25] * 3
    x, _ = data.train_images(torch.arange(4), torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 16, 16)  # the crop is the images' own size


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"train_x": np.zeros((96, 3, 16, 16), np.float32)}, "dataset.path", "uint8"),
        ({"train_x": np.zeros((96, 16, 16), np.uint8)}, "dataset.path", "4-D"),
        ({"train_x": np.zeros((96, 3, 16, 12), np.uint8)}, "dataset.path", "square"),
        ({"train_y": np.zeros(95, np.int64)}, "dataset.path", "one label per image"),
        ({"train_y": np.zeros(96, np.float32)}, "dataset.path", "integers"),
        ({"test_y": np.full(32, 3)}, "dataset.classes", "labels 3..3"),
        ({"test_y": np.full(32, -1)}, "dataset.classes", "0..classes-1"),
        ({"test_x": np.zeros((32, 3, 8, 8), np.uint8)}, "dataset.path", "one image shape"),
    ],
)
def test_wrong_arrays_are_one_line_naming_the_field(tmp_path: Path, change, field, says):
    path = _save(tmp_path, **_data(nhwc=False, **change))
    with pytest.raises(UserError) as err:
        load_arrays(path, classes=3, train_size=64)
    message = str(err.value)
    assert message.startswith(field) and says in message and "\n" not in message


def test_missing_keys_object_arrays_and_short_files_are_refused(tmp_path: Path) -> None:
    arrays = _data()
    del arrays["test_y"]
    with pytest.raises(UserError, match="no array 'test_y'"):
        load_arrays(_save(tmp_path, **arrays), classes=3, train_size=64)
    objects = _data(train_y=np.array([{"x": 1}] * 96, dtype=object))
    with pytest.raises(
        UserError, match=r"dataset.path: .*pickled data\), which is never loaded"
    ):  # never unpickled
        load_arrays(_save(tmp_path, **objects), classes=3, train_size=64)
    with pytest.raises(UserError, match=r"dataset.train_size: 200, .* 96 training"):
        load_arrays(_save(tmp_path, **_data()), classes=3, train_size=200)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"dataset.path: .*not an \.npz"):
        load_arrays(tmp_path / "junk.npz", classes=3, train_size=64)


def _suite(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "arrays.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: arrays
            dataset: {dataset}
            models:
              cnn: {{name: small_cnn, width: 4}}
            optimizers:
              sgd: {{kind: momentum, lr: 0.05, momentum: 0.9}}
            schedule: {{epochs: 2, milestones: [1], factor: 2, batch_size: 16}}
            schedules:
              decaying_lr: {{realization: lr}}
              increasing_batch: {{realization: batch}}
            training: {{ghost_batch_size: 16}}
            experiments:
              - {{name: e, optimizers: [sgd], schedules: [decaying_lr, increasing_batch]}}
            """
        )
    )
    return path


@pytest.mark.parametrize(
    ("dataset", "field"),
    [
        ("{name: arrays, path: d.npz, train_size: 64}", "dataset.classes"),
        ("{name: arrays, classes: 3, train_size: 64}", "dataset.path"),
        ("{name: arrays, path: d.npz, classes: 3}", "dataset.train_size"),
        ("{name: arrays, path: d.npz, classes: 3, train_size: 64, mean: [0.5]}", "dataset.std"),
        ("{name: cifar10, classes: 3}", "dataset.classes"),  # the field cifar10 does not take
    ],
)
def test_an_arrays_dataset_without_what_it_needs_names_the_field(tmp_path, dataset, field):
    with pytest.raises(UserError) as err:
        load_suite(_suite(tmp_path, dataset))
    assert f": {field}:" in str(err.value)


def test_a_registered_datasets_cell_ids_are_unchanged_by_the_new_keys(tmp_path: Path) -> None:
    text = "{name: synthetic, train_size: 64, test_size: 32}"
    cell = load_suite(_suite(tmp_path, text)).cells[0]
    assert cell.resolved_config()["dataset"] == {
        "name": "synthetic",
        "train_size": 64,
        "test_size": 32,
        "augment": True,
    }


def test_harness_run_trains_on_the_users_arrays_and_refuses_bad_labels(tmp_path: Path) -> None:
    path = _save(tmp_path, **_data())
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 64}}"
    suite = _suite(tmp_path, dataset)
    results = tmp_path / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    runs = pd.read_parquet(results / "runs")
    assert set(runs["status"]) == {"ok"} and len(runs) == 2
    assert set(runs["train_size"]) == {64}
    assert runs["data_source"].str.contains("sha256:").all()
    assert json.loads(runs["config"].iloc[0])["dataset"]["classes"] == 3
    # Labels outside 0..classes-1: one line naming the field, exit 2, nothing trained.
    bad = run_cli("run", str(suite), "--results", str(tmp_path / "r2"), "--device", "cpu",
                  "--set", "dataset.classes=2")  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    line = bad.stderr.strip()
    assert "\n" not in line and "dataset.classes: 2" in line and "labels 0..2" in line
    assert not (tmp_path / "r2" / "runs").exists()
