"""Batches of an image folder for training and evaluation: keys, epoch order, DataLoader.

The train layer owns the seeds; this module turns them into batches. An epoch is fixed by
(``order_seed``, ``augment_seed``, batch size B): the order is ``torch.randperm(N)`` from
``order_seed`` (as the CIFAR-10 path draws it), the epoch has exactly floor(N / B) steps of B
images (the remainder is dropped), and each image's crop comes from (``augment_seed``, its
index). The batch sampler hands the workers *keys* (index, augment_seed), never a random state,
so the decoded batches are the same for any number of workers, any prefetching, and any
micro-batch split of a step.

One DataLoader (persistent workers, pinned memory on CUDA) serves a whole run whose B changes
by phase: call :meth:`EpochBatchSampler.set_epoch` before iterating it for each epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.core.execution import DEFAULT_MAX_IMAGE_PIXELS
from harness.data.image_transforms import (
    Backend,
    ImageTransform,
    UnreadableImageError,
    resolve_backend,
    sample_rng,
)
from harness.data.imagefolder import Check, ImageList, image_classes, scan_split
from harness.data.source import Shard

SampleKey = tuple[int, int]  # (image index, augment seed of its epoch)


class ImageFolderDataset(Dataset[tuple[Tensor, int]]):
    """``dataset[(index, augment_seed)]`` → (uint8 image (3, size, size), label).

    ``len(dataset)`` is N, the images kept by the scan. A plain int key means augment seed 0
    (evaluation transforms draw nothing, so the seed does not matter there).
    """

    def __init__(self, images: ImageList, transform: ImageTransform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return self.images.n

    @property
    def backend(self) -> str:
        return self.transform.backend

    def __getitem__(self, key: SampleKey | int) -> tuple[Tensor, int]:
        index, augment_seed = (key, 0) if isinstance(key, int) else key
        rng = sample_rng(augment_seed, index) if self.transform.train else None
        image = self.transform(self.images.path(index), rng)
        return image, int(self.images.labels[index])


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """The keys of one training epoch, step by step, optionally cut into micro-batches.

    After ``set_epoch(batch_size=B, order_seed=o, augment_seed=a, micro_batch=m)`` an
    iteration yields ``steps`` = floor(N / B) steps in order, each as ceil(B / m) lists of
    keys (m keys each, the last of a step possibly fewer; m = B when not given): concatenating
    a step's lists gives that step's B keys. ``len()`` is the number of lists yielded.

    ``shard`` (data parallelism): each step yields only this process's contiguous share of
    the B keys (whole units, `harness.data.source.Shard`), cut into micro-batches the same
    way; the shares of all ranks concatenate to the step. ``permutation`` is the epoch's order
    (all N indices).
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"EpochBatchSampler: need at least one image, got n={n}")
        self.n = n
        self.batch_size = 0
        self.micro_batch = 0
        self.order_seed = 0
        self.augment_seed = 0
        self.shard = Shard(0, 1)
        self.permutation = np.arange(0)

    def set_epoch(
        self,
        *,
        batch_size: int,
        order_seed: int,
        augment_seed: int,
        micro_batch: int | None = None,
        shard: Shard | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > self.n:
            raise ValueError(f"batch_size {batch_size} exceeds the {self.n} images: no full step")
        shard = Shard(0, 1) if shard is None else shard
        if shard.world < 1 or not 0 <= shard.rank < shard.world:
            raise ValueError(f"rank {shard.rank} of {shard.world}: not a process of the job")
        share = shard.size(batch_size)  # ValueError unless whole units for every rank
        micro = share if micro_batch is None else min(micro_batch, share)
        if micro < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        self.batch_size = batch_size
        self.micro_batch = micro
        self.order_seed = order_seed
        self.augment_seed = augment_seed
        self.shard = shard
        order = torch.Generator().manual_seed(order_seed)
        self.permutation = torch.randperm(self.n, generator=order).numpy()

    @property
    def steps(self) -> int:
        """Optimizer updates in the epoch: floor(N / B)."""
        self._require_epoch()
        return self.n // self.batch_size

    @property
    def chunks_per_step(self) -> int:
        self._require_epoch()
        return -(-self.shard.size(self.batch_size) // self.micro_batch)

    def __len__(self) -> int:
        return self.steps * self.chunks_per_step

    def __iter__(self) -> Iterator[list[SampleKey]]:
        self._require_epoch()
        perm = self.permutation
        b, m, seed = self.batch_size, self.micro_batch, self.augment_seed
        first, last = self.shard.bounds(b)
        share = last - first
        for step in range(self.steps):
            batch = perm[step * b + first : step * b + last]
            for lo in range(0, share, m):
                yield [(int(i), seed) for i in batch[lo : lo + m]]

    def _require_epoch(self) -> None:
        if self.batch_size == 0:
            raise RuntimeError("EpochBatchSampler: call set_epoch(...) before using it")


class EvalBatchSampler(Sampler[list[SampleKey]]):
    """All N images in index order, in batches of ``batch_size`` (the last may be short).

    With ``rank`` / ``world``: only batches number rank, rank + world, ... (a process's share
    of an evaluation; the shares of all ranks cover every batch once).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of {world}: not a process of the job")
        self.n = n
        self.batch_size = batch_size
        self.rank = rank
        self.world = world

    def __len__(self) -> int:
        return len(range(self.rank, -(-self.n // self.batch_size), self.world))

    def __iter__(self) -> Iterator[list[SampleKey]]:
        starts = range(0, self.n, self.batch_size)
        for lo in starts[self.rank :: self.world]:
            yield [(i, 0) for i in range(lo, min(lo + self.batch_size, self.n))]


def _worker_init(_: int) -> None:
    # Decoding is Pillow's C code; torch ops in a worker are tiny, and one thread per worker
    # keeps N workers from oversubscribing the cores they share with the training process.
    torch.set_num_threads(1)


@dataclass(frozen=True)
class _Unreadable:
    """What a worker hands back for a batch holding an image that failed to decode."""

    message: str


class _Guarded(Dataset[Any]):
    """A dataset whose decode failures come back as values, not as a worker's traceback.

    A DataLoader re-raises a worker's exception with the worker's whole traceback in its
    message (2,000 characters in a run row); the message alone travels this way instead.
    """

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey | int) -> Any:
        try:
            return self.dataset[key]
        except UnreadableImageError as exc:
            return _Unreadable(str(exc))


def _collate(samples: list[Any]) -> Any:
    for sample in samples:
        if isinstance(sample, _Unreadable):
            return sample
    # numpy's stack, not torch's: with num_workers = 0 this runs in the training process,
    # where torch.stack's thread pool measured 0.2 s per batch of 8 on a loaded 2-core CPU.
    images = torch.from_numpy(np.stack([image.numpy() for image, _ in samples]))
    labels = torch.from_numpy(np.array([label for _, label in samples], dtype=np.int64))
    return images, labels


class ImageLoader:
    """A DataLoader of image batches; an image that fails to decode raises one
    `UnreadableImageError` naming the file (and the cure), never a worker's traceback."""

    def __init__(self, loader: DataLoader[Any]) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            if isinstance(batch, _Unreadable):
                raise UnreadableImageError(batch.message)
            yield batch


def image_loader(
    dataset: ImageFolderDataset,
    batch_sampler: EpochBatchSampler | EvalBatchSampler,
    *,
    num_workers: int,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
) -> ImageLoader:
    """A DataLoader yielding (uint8 images (b, 3, S, S), int64 labels (b,)) per sampler list.

    Workers persist across epochs (the sampler is re-aimed with ``set_epoch``); memory is
    pinned when CUDA is available unless ``pin_memory`` says otherwise.
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    workers = max(0, num_workers)
    loader = DataLoader(
        _Guarded(dataset),
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers else None,
    )
    return ImageLoader(loader)


@dataclass(frozen=True, eq=False)
class ImageFolderData:
    """An ImageNet-style folder ready to batch: train (augmented) and val (centre-cropped).

    ``n_train`` is N for schedules and update counts (images kept after skipping);
    ``backend`` ("pillow" or "torchvision") belongs in a run's provenance.
    """

    train: ImageFolderDataset
    val: ImageFolderDataset
    classes: tuple[str, ...]
    size: int
    backend: str

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    @property
    def skipped(self) -> int:
        """Files left out of either split (each reported in a warning by the scan)."""
        return len(self.train.images.skipped) + len(self.val.images.skipped)


def open_image_folder(
    root: Path,
    size: int,
    *,
    backend: Backend = "auto",
    check: Check = "header",
    threads: int = 8,
    draft: bool = False,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ImageFolderData:
    """Scan ROOT/train and ROOT/val (see harness.data.imagefolder) for crops of ``size``.

    ``size`` is the model's input side (``type(model).input_size``: 299 for
    Inception-ResNet-V2, 224 for ResNet-50). Raises a one-line UserError for a missing or
    malformed folder. An image of more than ``max_pixels`` pixels is skipped as unreadable
    (``execution.max_image_pixels``).
    """
    chosen = resolve_backend(backend)
    classes = image_classes(Path(root))
    train, val = (
        scan_split(
            root, split, classes=classes, check=check, threads=threads, max_pixels=max_pixels
        )
        for split in ("train", "val")
    )
    train_tf = ImageTransform(size, True, chosen, draft=draft, max_pixels=max_pixels)
    return ImageFolderData(
        train=ImageFolderDataset(train, train_tf),
        val=ImageFolderDataset(val, ImageTransform(size, False, chosen, max_pixels=max_pixels)),
        classes=classes,
        size=size,
        backend=chosen,
    )
