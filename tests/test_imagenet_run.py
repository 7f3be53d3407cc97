"""ImageNet training through the real CLI, on a tiny image folder the test writes with Pillow.

A few dozen small JPEGs (3 classes) and tiny configurations of both ImageNet models at 75 px
keep it to seconds on a CPU; the data path is the one a real run takes (scan, DataLoader
workers, random-resized crops keyed by (augment seed, index), centre-cropped evaluation).
In-process tests check the seams: `FolderData` draws the same order as `DeviceData`, splits
steps over processes exactly, and the audit's checksums see order, pixels and labels.
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from harness.config.suite import load_suite
from harness.data.folder import FolderData
from harness.data.image_loader import open_image_folder
from harness.data.source import Shard, StepBatch
from harness.errors import UserError
from harness.train.audit import AuditedFolderData
from tests.conftest import run_cli

CLASSES = ("n01440764", "n01443537", "n01484850")
TRAIN_PER_CLASS = 8  # N = 24
VAL_PER_CLASS = 2

SUITE = """\
name: tiny-imagenet
dataset: {{name: imagenet, train_size: {n}, test_size: 6, image_size: 75}}
models:
  irv2: {{name: inception_resnet_v2, blocks_a: 1, blocks_b: 1, blocks_c: 1, width_divisor: 16}}
  resnet: {{name: resnet50, width: 4, max_blocks: 1}}
optimizers:
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: 2, milestones: [1], factor: 2, batch_size: 8}}
schedules:
  decaying_lr: {{realization: lr}}
  increasing_batch: {{realization: batch}}
training: {{ghost_batch_size: 4, weight_decay: 1.0e-4}}
execution: {{max_micro_batch: 4, eval_batch_size: 4, loader_workers: {workers}}}
experiments:
  - name: tiny
    optimizers: [momentum]
    schedules: [decaying_lr, increasing_batch]
    models: [irv2, resnet]
    seeds: [0]
"""


def make_folder(root: Path, per_class: int = TRAIN_PER_CLASS) -> Path:
    """ROOT/imagenet/{train,val}/<wnid>/*.JPEG: small JPEGs of varied shapes, a class colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", VAL_PER_CLASS)):
        for c, wnid in enumerate(CLASSES):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = 80 + 5 * i, 100 - 3 * i
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c] = 255
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"))


def write_suite(folder: Path, n: int = 3 * TRAIN_PER_CLASS, workers: int = 1) -> Path:
    path = folder / "tiny-imagenet.yaml"
    path.write_text(textwrap.dedent(SUITE.format(n=n, workers=workers)))
    return path


def _ok(result):  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_both_models_train_through_the_cli_and_report(data_root: Path, tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    results = tmp_path / "results"
    args = ("--results", str(results), "--device", "cpu", "--data", str(data_root))
    _ok(run_cli("run", str(suite), *args))
    runs = pd.read_parquet(results / "runs")
    curves = pd.read_parquet(results / "curves")
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    assert set(runs["model"]) == {"irv2", "resnet"}
    # N = 24: B 8 gives 3 updates an epoch; the batch realization doubles B to 16 (1 update).
    assert (runs["updates"] == runs["planned_updates"]).all()
    assert sorted(runs["updates"]) == [4, 4, 6, 6]
    assert set(runs["train_size"]) == {24}
    assert all("imagefolder" in s and "24 train, 6 val" in s for s in runs["data_source"])
    assert runs["final_test_acc"].between(0, 1).all()
    # Tier 0 saw every step: the applied batch, micro-batch and ghost size, and checksums.
    assert set(curves["applied_micro_batch"]) == {4}
    assert set(curves["ghost_size"]) == {4}
    assert (curves["applied_weight_decay"] == 1e-4).all()
    assert curves["order_checksum"].gt(0).all() and curves["augment_checksum"].gt(0).all()
    # Same seed, same epoch: the same order and crops whatever the model or schedule.
    first = curves[curves["epoch"] == 1]
    assert first["order_checksum"].nunique() == 1 and first["augment_checksum"].nunique() == 1
    report = _ok(run_cli("report", str(results)))
    assert "decaying_lr" in report.stdout and "increasing_batch" in report.stdout
    # A second run skips every finished cell.
    again = _ok(run_cli("run", str(suite), *args))
    assert "4 already finished" in again.stdout + again.stderr


def test_models_of_different_crop_sides_each_train_at_their_own(
    data_root: Path, tmp_path: Path
) -> None:
    """No dataset.image_size: ResNet-50 crops to 224 px and Inception-ResNet-V2 to 299 in one
    run (the folder opened once per side), as Goyal et al.'s baseline beside the paper's."""
    from harness.app.data_loading import data_groups

    text = textwrap.dedent(SUITE.format(n=3 * TRAIN_PER_CLASS, workers=0))
    text = text.replace(", image_size: 75}", "}").replace(
        "schedules: [decaying_lr, increasing_batch]", "schedules: [decaying_lr]"
    )
    suite = tmp_path / "sides.yaml"
    suite.write_text(text)
    loaded = load_suite(suite)
    groups = data_groups(loaded, loaded.cells)
    assert [[c.model_name for c in g] for g in groups] == [["irv2"], ["resnet"]]
    results = tmp_path / "results"
    args = ("--results", str(results), "--device", "cpu", "--data", str(data_root))
    _ok(run_cli("run", str(suite), *args))
    runs = pd.read_parquet(results / "runs").set_index("model")
    assert set(runs["status"]) == {"ok"}
    assert "299 px" in runs.loc["irv2", "data_source"]
    assert "224 px" in runs.loc["resnet", "data_source"]


def test_missing_folder_is_exit_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "run", str(write_suite(tmp_path)), "--results", str(tmp_path / "r"),
        "--device", "cpu", "--data", str(tmp_path / "nowhere"),
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no ImageNet folder at" in lines[0], result.stderr


def test_a_folder_of_another_size_is_refused_naming_both_numbers(
    data_root: Path, tmp_path: Path
) -> None:
    from harness.app.runner import run_suite

    suite = load_suite(write_suite(tmp_path, n=30))
    with pytest.raises(UserError, match=r"24 readable images.*N = 30.*dataset\.train_size=24"):
        run_suite(suite, results=tmp_path / "r", device="cpu", data=data_root)


@pytest.fixture(scope="module")
def folder(data_root: Path) -> FolderData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opened = open_image_folder(data_root / "imagenet", 32)
    return FolderData(opened, torch.device("cpu"), workers=0)


def _step(batch: StepBatch) -> tuple[torch.Tensor, torch.Tensor]:
    chunks = list(batch.micro_batches)
    assert len(chunks) == batch.count
    return torch.cat([x for x, _ in chunks]), torch.cat([y for _, y in chunks])


def test_order_is_the_randperm_device_data_draws(folder: FolderData) -> None:
    steps = list(folder.epoch_batches(7, 11, 8, 3, 4))
    order = torch.randperm(24, generator=torch.Generator().manual_seed(7))
    labels = torch.from_numpy(folder.folder.train.images.labels)
    for s, batch in enumerate(steps):
        _, y = _step(batch)
        assert batch.size == 8 and batch.count == 2
        assert torch.equal(y, labels[order[s * 8 : (s + 1) * 8]])
        assert np.array_equal(folder.step_indices(s), order[s * 8 : (s + 1) * 8].numpy())


def test_shards_of_two_processes_make_the_one_process_step(folder: FolderData) -> None:
    whole = [_step(b) for b in folder.epoch_batches(3, 5, 8, 3, 2)]
    shares = [[_step(b) for b in folder.epoch_batches(3, 5, 8, 3, 2, Shard(r, 2))] for r in (0, 1)]
    for s, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][s][0], shares[1][s][0]]), x)
        assert torch.equal(torch.cat([shares[0][s][1], shares[1][s][1]]), y)
    # Uneven: 3 processes, B = 8 as 4 ghost slices of 2: shares of 4, 2 and 2 images.
    uneven = [
        [(b.size, b.step_size, _step(b)) for b in folder.epoch_batches(3, 5, 8, 3, 2, shard)]
        for shard in (Shard(r, 3, unit=2) for r in (0, 1, 2))
    ]
    assert [u[0][:2] for u in uneven] == [(4, 8), (2, 8), (2, 8)]
    for s, (x, y) in enumerate(whole):
        parts = [u[s][2] for u in uneven]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_audit_checksums_see_order_and_augmentation(folder: FolderData) -> None:
    def sums(order_seed: int, augment_seed: int) -> list[int]:
        audited = AuditedFolderData(folder, torch.float32)
        for batch in audited.epoch_batches(order_seed, augment_seed, 8, 3, 8):
            for x, _ in batch.micro_batches:
                audited.normalize(x)
        assert audited.batch == 8 and audited.micro == 8 and audited.position == 24
        return audited.sums.tolist()

    base = sums(1, 2)
    assert sums(1, 2) == base
    other_order, other_crops = sums(9, 2), sums(1, 9)
    assert other_order[0] != base[0] and other_order[2] != base[2]
    assert other_crops[0] == base[0] and other_crops[1] != base[1] and other_crops[2] == base[2]


def test_evaluation_is_every_val_image_centre_cropped_and_normalized(folder: FolderData) -> None:
    batches = list(folder.test_batches(4))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    halves = [list(folder.test_batches(4, Shard(r, 2))) for r in (0, 1)]
    assert [len(h) for h in halves] == [1, 1]
    assert torch.equal(torch.cat([halves[0][0][0], halves[1][0][0]]), x)


def test_warm_up_through_a_folder_restores_weights_and_state(
    data_root: Path, tmp_path: Path
) -> None:
    """On a GPU every cell warms up first: through the folder's warm-up batch and a whole
    evaluation, leaving weights, BN statistics and the audit's counters as they were."""
    from harness.app.jobs import train_job
    from harness.core.execution import Execution
    from harness.train.audit import Audit
    from harness.train.epoch import warm_up
    from harness.train.loop import build
    from harness.train.optim import build_optimizer

    suite = load_suite(write_suite(tmp_path))
    job = train_job(next(c for c in suite.cells if c.model_name == "resnet"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = FolderData(
            open_image_folder(data_root / "imagenet", 75), torch.device("cpu"), workers=0
        )
    execution = Execution(max_micro_batch=4, eval_batch_size=4)
    model = build(job, data.device, execution)
    optimizer = build_optimizer(model.parameters(), job.optimizer, data.device)
    audit = Audit(job, data, model, optimizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    warm_up(model, optimizer, audit.data, job, execution)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    audit.begin_epoch()
    assert audit.data.sums.tolist() == [0, 0, 0] and audit.data.micro == 0
