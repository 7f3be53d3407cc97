"""An ImageNet-style image folder as a training data source: DataLoader workers decode, the
device normalizes.

`FolderData` implements `harness.data.source.DataSource` over `image_loader`'s pieces: one
persistent DataLoader for training, re-aimed each epoch with `EpochBatchSampler.set_epoch`,
whose batches are the step's micro-batches (so neither the pinned host buffers nor the device
ever hold a whole step of B images; B = 81920 would be 22 GB at 299 px), and one per
evaluation batch size. Workers decode and crop to uint8 (a quarter of float32's bytes through
shared and pinned memory); the copy to the device is non-blocking; normalization (ImageNet's
mean and std) runs on the device.

The epoch is (order_seed, augment_seed, B): the order is ``torch.randperm(N)`` from
``order_seed``, as `DeviceData` draws it, and each image's crop is a function of
(augment_seed, its index) (harness.data.image_transforms). With a ``shard`` (a process's place
in a data-parallel job, `harness.data.source.Shard`) each process's sampler hands its workers
only its share of every step, so N processes decode each image once between them, and the
shares are the ones `DeviceData` would give.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.core.datasets import Storage
from harness.data.image_loader import (
    EpochBatchSampler,
    EvalBatchSampler,
    ImageFolderData,
    ImageFolderDataset,
    image_loader,
    open_image_folder,
)
from harness.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from harness.data.request import LoadRequest
from harness.data.source import Shard, StepBatch
from harness.errors import UserError


class FolderData:
    """An opened image folder (`open_image_folder`) served to training on ``device``.

    ``workers``: decoding processes per DataLoader (0: decode in this process).
    ``augment``: False trains on the evaluation transform (resize and centre crop).
    """

    storage: ClassVar[Storage] = "stream"  # harness.core.datasets: read from disk per step

    def __init__(
        self,
        folder: ImageFolderData,
        device: torch.device,
        *,
        workers: int,
        channels_last: bool = False,
        augment: bool = True,
    ) -> None:
        self.folder = folder
        self._device = torch.device(device)
        self.channels_last = channels_last
        self.workers = max(0, workers)
        self._pin = self._device.type == "cuda"
        train = folder.train
        if not augment:
            train = ImageFolderDataset(train.images, _eval_transform(folder))
        self._sampler = EpochBatchSampler(folder.n_train)
        self._train = image_loader(
            train, self._sampler, num_workers=self.workers, pin_memory=self._pin
        )
        # The training images through the evaluation transform (the paper's training loss).
        self._train_eval = ImageFolderDataset(folder.train.images, _eval_transform(folder))
        self._eval_loaders: dict[tuple[str, int, Shard | None], Any] = {}
        mean = torch.tensor(IMAGENET_MEAN, device=self._device)
        std = torch.tensor(IMAGENET_STD, device=self._device)
        # (x - 255 mean) / (255 std) as one multiply-add on uint8 values, as DeviceData.
        self._shift = (mean * 255.0).view(1, -1, 1, 1)
        self._scale = (1.0 / (std * 255.0)).view(1, -1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def n_train(self) -> int:
        return self.folder.n_train

    @property
    def n_test(self) -> int:
        return self.folder.n_val

    @property
    def image_size(self) -> int:
        return self.folder.size

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images (B, 3, S, S) → float32 with ImageNet's per-channel mean and std."""
        out = x.float().sub_(self._shift).mul_(self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def epoch_batches(
        self,
        order_seed: int,
        augment_seed: int,
        batch_size: int,
        steps: int,
        micro: int,
        shard: Shard | None = None,
    ) -> Iterator[StepBatch]:
        """The epoch's ``steps`` steps of B, each this process's share as micro-batches of
        ``micro`` images decoded by the workers. Only whole steps: floor(N / B)."""
        shard = Shard(0, 1) if shard is None else shard
        if steps > self.n_train // batch_size:
            raise UserError(
                f"training.drop_last: an image folder trains whole batches only; {steps} steps "
                f"of {batch_size} need {steps * batch_size} images, the folder has "
                f"{self.n_train}; set drop_last: true"
            )
        self._sampler.set_epoch(
            batch_size=batch_size,
            order_seed=order_seed,
            augment_seed=augment_seed,
            micro_batch=micro,
            shard=shard,
        )
        chunks = iter(self._train)
        count = self._sampler.chunks_per_step
        share = shard.size(batch_size)
        for _ in range(steps):
            yield StepBatch(share, count, self._to_device(chunks, count), batch_size)

    def step_indices(self, step: int) -> np.ndarray:
        """The indices of the whole step ``step`` of the epoch last set (every rank's share)."""
        b = self._sampler.batch_size
        return self._sampler.permutation[step * b : (step + 1) * b]

    def warmup_batch(self, batch_size: int, micro: int, shard: Shard | None = None) -> StepBatch:
        # Shapes are what warm-up is for; decoding a whole step of B would only cost time.
        share = batch_size if shard is None else shard.size(batch_size)
        side = self.image_size
        images = torch.zeros(share, 3, side, side, dtype=torch.uint8, device=self._device)
        labels = torch.zeros(share, dtype=torch.int64, device=self._device)
        return StepBatch.split(images, labels, micro, batch_size)

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation images in index order: resized, centre-cropped, normalized."""
        return self._evaluate("val", self.folder.val, batch_size, shard)

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The training images in index order through the evaluation transform."""
        return self._evaluate("train", self._train_eval, batch_size, shard)

    def _evaluate(
        self, name: str, dataset: ImageFolderDataset, batch_size: int, shard: Shard | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        key = (name, batch_size, shard)
        loader = self._eval_loaders.get(key)
        if loader is None:
            rank, world = (0, 1) if shard is None else (shard.rank, shard.world)
            sampler = EvalBatchSampler(len(dataset), batch_size, rank, world)
            loader = image_loader(dataset, sampler, num_workers=self.workers, pin_memory=self._pin)
            self._eval_loaders[key] = loader
        for x, y in loader:
            x = x.to(self._device, non_blocking=True)
            yield self.normalize(x), y.to(self._device, non_blocking=True)

    def _to_device(self, chunks: Iterator[Any], count: int) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(count):
            x, y = next(chunks)
            yield x.to(self._device, non_blocking=True), y.to(self._device, non_blocking=True)

    def describe(self, root: object) -> str:
        """The run row's data_source: where, how many images, how decoded."""
        f = self.folder
        skipped = f" ({f.skipped} unreadable skipped)" if f.skipped else ""
        return (
            f"imagefolder {root}: {f.n_train} train, {f.n_val} val images{skipped}, "
            f"{len(f.classes)} classes, {f.size} px, {f.backend}"
        )


def _eval_transform(folder: ImageFolderData) -> ImageTransform:
    return ImageTransform(folder.size, False, folder.val.transform.backend)


def folder_root(request: LoadRequest) -> Path:
    """`dataset.path`, else `imagenet/` under --data / $HARNESS_DATA (or that folder itself
    when it holds train/ and val/); a missing folder is one line naming what is missing."""
    ds = request.spec
    if ds.path is not None:
        root = Path(ds.path).expanduser()
        what = "ImageNet folder" if ds.name == "imagenet" else "image folder"
        if not root.is_dir():
            raise UserError(f"{request.where}: dataset.path: no {what} at {root}")
        if ds.name == "imagefolder" and not ((root / "train").is_dir() and (root / "val").is_dir()):
            raise UserError(
                f"{request.where}: dataset.path: {root} holds no train/ and val/ folders; put "
                "train/<class>/* and val/<class>/* images there"
            )
        return root
    base = request.root
    if (base / "train").is_dir() and (base / "val").is_dir():
        return base
    if not (base / "imagenet").is_dir():
        raise UserError(
            f"no ImageNet folder at {base / 'imagenet'}: put imagenet/train/<wnid>/*.JPEG and "
            "imagenet/val/ under --data (or $HARNESS_DATA), or set dataset.path"
        )
    return base / "imagenet"


def open_folder(request: LoadRequest) -> tuple[FolderData, str]:
    """The `imagenet` and `imagefolder` kinds: the folder scanned once, served by DataLoader
    workers, cropped to `request.image_size`.

    N is the number of readable training images, and the plans were made for
    `dataset.train_size`: if the two differ the run is refused, naming both and the cure,
    rather than training a different number of updates than `harness plan` says.
    """
    ds, execution = request.spec, request.execution
    assert request.image_size is not None  # the caller settles the crop side first
    root = folder_root(request)
    folder = open_image_folder(
        root,
        request.image_size,
        check=execution.image_check,
        max_pixels=execution.max_image_pixels,
    )
    if ds.classes is not None and len(folder.classes) != ds.classes:
        raise UserError(
            f"{root / 'train'}: {len(folder.classes)} class folders, but dataset.classes is "
            f"{ds.classes}; pass --set dataset.classes={len(folder.classes)}"
        )
    planned = ds.n_train
    if folder.n_train != planned:
        raise UserError(
            f"{root / 'train'}: {folder.n_train} readable images, but the suite's schedules "
            f"are planned for N = {planned} (dataset.train_size); pass --set "
            f"dataset.train_size={folder.n_train} to plan for this folder, or restore the images"
        )
    if ds.test_size is not None and folder.n_val != ds.test_size:
        raise UserError(
            f"{root / 'val'}: {folder.n_val} readable images, but dataset.test_size is "
            f"{ds.test_size}; pass --set dataset.test_size={folder.n_val}"
        )
    workers = execution.loader_workers
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    data = FolderData(
        folder,
        request.device,
        workers=workers,
        channels_last=request.channels_last,
        augment=ds.augment,
    )
    return data, data.describe(root)
