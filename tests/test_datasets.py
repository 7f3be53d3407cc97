"""The dataset registry: every kind complete in both layers, and a new kind is one file.

What a kind is (harness.core.datasets.DATASETS, torch-free) and how it loads
(harness.data.registry.LOADERS) are two registries under one name; these tests keep them
equal and every entry complete, as tests/test_models.py does for the models. The last test
adds a kind from one file of its own, with one `register` line, and plans and trains it
through the real command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import pandas as pd
import pytest

from harness.app.bench import bench_datasets
from harness.app.convert import datasets as convert_datasets
from harness.app.fingerprint import FINGERPRINTED
from harness.config.schema import DatasetSpec
from harness.core.datasets import DATASET_FIELDS, DATASETS, STORAGES, DatasetField
from harness.data.device import DeviceData
from harness.data.folder import FolderData
from harness.data.registry import LOADERS
from harness.data.text import SequenceData
from harness.train.audit import AUDITS
from tests.conftest import REPO, run_cli

SIZES = ("train_size", "test_size")
# A value for each field a kind may need, to build its smallest valid `dataset:`.
GIVEN: dict[str, object] = {
    "train_size": 64,
    "test_size": 16,
    "path": "data.npz",
    "classes": 5,
    "image_size": 32,
    "block_size": 32,
    "vocab_size": 100,
}


def test_every_kind_has_its_loader_and_nothing_else_has_one() -> None:
    assert list(LOADERS) == list(DATASETS)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_kind_is_complete(name: str) -> None:
    kind, loader = DATASETS[name], LOADERS[name]
    assert kind.name == name and kind.title and kind.about
    assert kind.storage in STORAGES
    # Held on the device: read whole, then made a DeviceData; streamed: its own source; a
    # token stream: its own source held on the device.
    assert (loader.read is not None) == (kind.storage == "device")
    assert (loader.stream is not None) == (kind.storage == "stream")
    assert (loader.source is not None) == (kind.storage == "sequences")
    assert (kind.counts is not None) == (kind.storage == "sequences")
    assert (loader.download is not None) == (kind.download is not None)
    assert set(kind.takes) <= set(DATASET_FIELDS)
    for need, fix in kind.needs:
        assert need in (*SIZES, *kind.takes) and fix, need
    needs = {need for need, _ in kind.needs}
    # What the descriptor leaves open, the suite must give (DatasetSpec.n_train, num_classes),
    # or its files tell (`counts`, from their sizes).
    assert kind.train_size is not None or "train_size" in needs or kind.counts is not None
    assert kind.classes is not None or "classes" in needs or "vocab_size" in needs
    assert kind.image_side is not None or kind.crops or kind.channels is None or "path" in needs
    # train_size given: a kind that counts its files does not look for them.
    given = {k: GIVEN[k] for k in needs} | ({"train_size": 64} if kind.counts else {})
    spec = DatasetSpec.model_validate({"name": name, **given})
    assert spec.kind is kind and spec.n_train > 0 and spec.num_classes >= 2


def test_every_way_of_holding_data_has_a_source_and_an_audit() -> None:
    assert sorted(AUDITS) == sorted(STORAGES)
    assert {DeviceData.storage, FolderData.storage, SequenceData.storage} == set(STORAGES)
    assert set(get_args(DatasetField)) == set(DATASET_FIELDS)


def test_the_commands_lists_of_kinds_come_from_the_registry() -> None:
    assert set(FINGERPRINTED) <= set(DATASETS)
    assert "synthetic" in bench_datasets() and "cifar10" in bench_datasets()
    assert all(DATASETS[n].storage == "device" and DATASETS[n].sized_only for n in bench_datasets())
    assert convert_datasets() == [n for n, k in DATASETS.items() if k.sized_only]


def test_a_field_the_kind_does_not_take_names_the_kinds_that_do(cli, tmp_path: Path) -> None:
    result = cli("plan", str(REPO / "suites/smoke.yaml"), "--set", "dataset.image_size=64")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset.image_size: only dataset imagenet or imagefolder takes it" in result.stderr
    unknown = cli("plan", str(REPO / "suites/smoke.yaml"), "--set", "dataset.name=stripes")
    assert unknown.returncode == 2
    assert "dataset.name: unknown dataset 'stripes'; choose one of: arrays, cifar10" in (
        unknown.stderr
    )


# A new dataset kind as a plug-in: this file and nothing else (docs/ARCHITECTURE.md, "How to
# add a dataset"). Dark and light 32x32 images, two classes.
STRIPES = '''\
"""Stripes: a dataset kind of one file."""

import numpy as np

from harness.core.datasets import DatasetKind
from harness.data.cifar10 import Cifar10, HostData
from harness.data.registry import DatasetLoader, register


def read(request):
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 2, n)
        x = y[:, None, None, None] * 150 + rng.integers(0, 100, (n, 3, 32, 32))
        return x.astype(np.uint8), y.astype(np.int64)

    spec = request.spec
    train_x, train_y = split(spec.train_size or 96)
    test_x, test_y = split(spec.test_size or 32)
    return HostData(Cifar10(train_x, train_y, test_x, test_y, ["dark", "light"]), "stripes v1")


register(
    DatasetKind("stripes", "Stripes", "dark and light 32x32 images", train_size=96,
                test_size=32, classes=2),
    DatasetLoader(read=read),
)
'''

SUITE = """\
name: stripes
dataset: {name: stripes}
models:
  small: {name: small_cnn, width: 4}
optimizers:
  sgd: {kind: momentum, lr: 0.05, momentum: 0.9}
schedule: {epochs: 2, milestones: [1], factor: 2, batch_size: 16}
schedules:
  decaying: {realization: lr}
training: {ghost_batch_size: 16}
execution: {eval_batch_size: 32}
experiments:
  - {name: one, optimizers: [sgd], schedules: [decaying]}
"""


def _harness_with(plugin: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in a fresh process that imported `plugin` first (what an
    installed package's import does)."""
    path = os.pathsep.join(filter(None, (str(cwd), str(REPO), os.environ.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-c", f"import {plugin}\nfrom harness.cli import main\nmain()", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )


def test_a_new_kind_is_one_file_with_one_registration(tmp_path: Path) -> None:
    (tmp_path / "stripes.py").write_text(STRIPES)
    suite = tmp_path / "stripes.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    plan = _harness_with("stripes", "plan", str(suite), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "12 updates in 2 epochs" in plan.stdout  # N = 96 from the descriptor, B = 16
    too_big = _harness_with(
        "stripes", "plan", str(suite), "--set", "dataset.train_size=97", cwd=tmp_path
    )
    assert too_big.returncode == 2 and "train_size 97 exceeds stripes's 96" in too_big.stderr
    results = tmp_path / "results"
    run = _harness_with(
        "stripes", "run", str(suite), "--device", "cpu", "--results", str(results), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    row = pd.read_parquet(results / "runs").iloc[0]
    assert (row["status"], row["dataset"], row["train_size"]) == ("ok", "stripes", 96)
    assert row["data_source"] == "stripes v1"  # which copy, as its reader says
    # Without the plug-in the name is unknown: one line, exit 2.
    plain = run_cli("plan", str(suite), cwd=tmp_path)
    assert plain.returncode == 2 and "unknown dataset 'stripes'" in plain.stderr
