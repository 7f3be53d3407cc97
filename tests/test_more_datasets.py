"""CIFAR-100 and any class-per-folder image tree as suite datasets, through the real CLI.

CIFAR-100 cannot be downloaded here, so its folder is written in the official format (the
pickled `train`/`test`/`meta` files with 100 `fine_labels`), with real CIFAR-10 pixels where
HARNESS_DATA holds them; the image tree is written with Pillow, as tests/test_imagenet_run.py
does for ImageNet.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.data.cifar10 import (
    cifar100_source,
    load_cifar10,
    load_cifar100,
    synthetic_cifar10,
)
from harness.data.download import download_cifar100
from harness.errors import UserError
from tests.conftest import run_cli
from tests.test_imagenet_run import CLASSES, make_folder


def _pixels(n: int) -> np.ndarray:
    """n images (n, 3, 32, 32) uint8: CIFAR-10's own where HARNESS_DATA has it."""
    root = os.environ.get("HARNESS_DATA")
    if root and (Path(root) / "cifar-10-batches-py" / "data_batch_1").is_file():
        return load_cifar10(Path(root), train_size=n, test_size=1).train_x
    return synthetic_cifar10(n, 1, seed=0).train_x


def _cifar100_files(train: int, test: int, bad_label: bool = False) -> dict[str, bytes]:
    x = _pixels(train + test)
    labels = [i % 100 for i in range(train + test)]
    if bad_label:
        labels[0] = 100
    files = {}
    for name, sl in (("train", slice(0, train)), ("test", slice(train, train + test))):
        batch = {
            "filenames": [f"{i}.png" for i in range(sl.start, sl.stop)],
            "batch_label": name,
            "fine_labels": labels[sl],
            "coarse_labels": [v // 5 for v in labels[sl]],
            "data": x[sl].reshape(sl.stop - sl.start, -1),
        }
        files[name] = pickle.dumps(batch, protocol=3)
    meta = {"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": []}
    files["meta"] = pickle.dumps(meta, protocol=2)
    return files


def _write_cifar100(root: Path, train: int = 400, test: int = 100, **kw: bool) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, blob in _cifar100_files(train, test, **kw).items():
        (folder / name).write_bytes(blob)
    return root


CIFAR100_SUITE = """\
name: c100
dataset: {name: cifar100, train_size: 256, test_size: 64}
models: {small: {name: small_cnn, width: 4}}
optimizers: {momentum: {kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 64}
schedules:
  decaying: {realization: lr}
  increasing: {realization: batch}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 64}
experiments: [{name: grid, optimizers: [momentum], schedules: [decaying, increasing]}]
"""


def test_cifar100_loads_its_hundred_fine_labels_and_refuses_bad_ones(tmp_path: Path) -> None:
    root = _write_cifar100(tmp_path / "data")
    ds = load_cifar100(root, train_size=300)
    assert ds.train_x.shape == (300, 3, 32, 32) and ds.test_x.shape == (100, 3, 32, 32)
    assert ds.train_y.max() == 99 and len(ds.classes) == 100 and ds.classes[7] == "class7"
    assert load_cifar100(root / "cifar-100-python").train_x.shape[0] == 400  # the folder itself
    assert cifar100_source(root) == "unverified"  # not the official test file
    bad = _write_cifar100(tmp_path / "bad", bad_label=True)
    with pytest.raises(UserError, match=r"fine_labels.*outside 0\.\.99"):
        load_cifar100(bad)
    with pytest.raises(UserError, match="harness data cifar100"):
        load_cifar100(tmp_path / "nowhere")


def test_cifar100_download_verifies_and_extracts(tmp_path: Path) -> None:
    tgz = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name, blob in _cifar100_files(40, 10).items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    import hashlib

    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    folder = download_cifar100(tmp_path / "data", url=tgz.as_uri(), md5=md5)
    assert folder.name == "cifar-100-python" and load_cifar100(folder).train_x.shape[0] == 40
    with pytest.raises(UserError, match="not the CIFAR-100 python tarball"):
        download_cifar100(tmp_path / "other", url=tgz.as_uri(), md5="0" * 32)


def test_a_cifar100_suite_plans_runs_and_reports(tmp_path: Path) -> None:
    root = _write_cifar100(tmp_path / "data")
    suite = tmp_path / "c100.yaml"
    suite.write_text(CIFAR100_SUITE)
    plan = run_cli("plan", str(suite))
    assert plan.returncode == 0, plan.stderr
    results = tmp_path / "results"
    run = run_cli(
        "run", str(suite), "--results", str(results), "--device", "cpu", "--data", str(root)
    )
    assert run.returncode == 0, run.stderr
    runs = pd.read_parquet(results / "runs")
    assert set(runs["status"]) == {"ok"} and set(runs["dataset"]) == {"cifar100"}
    assert set(runs["data_source"]) == {"unverified"}
    assert (runs["updates"] == runs["planned_updates"]).all()
    report = run_cli("report", str(results))
    assert report.returncode == 0 and "increasing" in report.stdout


IMAGEFOLDER_SUITE = """\
name: folder
dataset: {{name: imagefolder, path: {path}, classes: {classes}, train_size: {n}, image_size: 32}}
models: {{small: {{name: small_cnn, width: 4}}}}
optimizers: {{momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}}}
schedule: {{epochs: 2, milestones: [1], factor: 2, batch_size: 8}}
schedules:
  decaying: {{realization: lr}}
  increasing: {{realization: batch}}
training: {{ghost_batch_size: 4}}
execution: {{eval_batch_size: 8, loader_workers: 0}}
experiments: [{{name: grid, optimizers: [momentum], schedules: [decaying, increasing]}}]
"""


def test_any_class_per_folder_tree_is_a_dataset(tmp_path: Path) -> None:
    tree = make_folder(tmp_path / "data") / "imagenet"  # 3 classes, 24 training images
    suite = tmp_path / "folder.yaml"
    suite.write_text(textwrap.dedent(IMAGEFOLDER_SUITE.format(path=tree, classes=3, n=24)))
    results = tmp_path / "results"
    run = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    runs = pd.read_parquet(results / "runs")
    assert set(runs["status"]) == {"ok"} and set(runs["dataset"]) == {"imagefolder"}
    assert all("24 train, 6 val" in s and "3 classes, 32 px" in s for s in runs["data_source"])
    assert len(CLASSES) == 3

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(textwrap.dedent(IMAGEFOLDER_SUITE.format(path=tree, classes=5, n=24)))
    refused = run_cli("run", str(wrong), "--results", str(tmp_path / "r2"), "--device", "cpu")
    assert refused.returncode == 2 and "3 class folders, but dataset.classes is 5" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "r2" / "runs").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    nowhere = tmp_path / "nowhere.yaml"
    nowhere.write_text(textwrap.dedent(IMAGEFOLDER_SUITE.format(path=empty, classes=3, n=24)))
    missing = run_cli("run", str(nowhere), "--results", str(tmp_path / "r3"), "--device", "cpu")
    assert missing.returncode == 2 and "holds no train/ and val/" in missing.stderr
    unsized = tmp_path / "unsized.yaml"
    unsized.write_text(
        textwrap.dedent(IMAGEFOLDER_SUITE.format(path=tree, classes=3, n=24)).replace(
            ", train_size: 24", ""
        )
    )
    plan = run_cli("plan", str(unsized))
    assert plan.returncode == 2 and "dataset.train_size" in plan.stderr
