"""Speed of the image-folder data path on CPU: decode + random-resized crop + flip, batched.

Run with ``pytest tests/benchmarks/test_bench_imagefolder.py --benchmark-only`` for numbers
(images/s in ``extra_info``); ``--benchmark-disable`` runs each body once as a smoke test.
The folder is generated: 240 ImageNet-sized (500x375) JPEGs of smooth colour fields with
noise, cropped to 224 as for ResNet-50, through a DataLoader with 2 worker processes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from harness.data.image_loader import EpochBatchSampler, ImageFolderDataset, image_loader
from harness.data.image_transforms import ImageTransform
from harness.data.imagefolder import ImageList, scan_split

IMAGES = 240
BATCH = 32
WORKERS = 2


def write_folder(root: Path, n: int, h: int = 375, w: int = 500, classes: int = 4) -> Path:
    """``n`` JPEGs of h x w under root/train/<class>/ (quality 90, like ImageNet's)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.005, 0.03, size=3)
        base = np.stack([np.sin(xx * a), np.cos(yy * b), np.sin((xx + yy) * c)], -1)
        pixels = 127 + 100 * base + rng.normal(0, 12, size=(h, w, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"img_{i}.JPEG", quality=90
        )
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageList:
    root = write_folder(tmp_path_factory.mktemp("bench_imagenet"), IMAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a generated folder has nothing to skip
        return scan_split(root, "train")


def _record_images_per_s(benchmark: Any, n: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(n / stats.stats.median, 1)
    benchmark.extra_info["images_per_call"] = n


@pytest.mark.parametrize("draft", [False, True], ids=["full-decode", "draft"])
def test_bench_train_epoch_224_two_workers(benchmark: Any, images: ImageList, draft: bool) -> None:
    dataset = ImageFolderDataset(images, ImageTransform(224, train=True, draft=draft))
    sampler = EpochBatchSampler(images.n)
    sampler.set_epoch(batch_size=BATCH, order_seed=0, augment_seed=0)
    loader = image_loader(dataset, sampler, num_workers=WORKERS)
    next(iter(loader))  # start the persistent workers outside the timing

    def epoch() -> int:
        return sum(len(y) for _, y in loader)

    n = benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=0)
    assert n == images.n // BATCH * BATCH
    _record_images_per_s(benchmark, n)
