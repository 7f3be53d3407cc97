"""The dataset resident on the training device: augmentation and batching as tensor ops.

The whole training set lives on the device as uint8, reflection-padded once; augmentation
(random 32x32 crop of the padded image, horizontal flip), normalization and batching are tensor
ops there, with no DataLoader and no host sync per step. Every random draw comes from a
``torch.Generator`` passed in by the caller, so the augmentation stream is separate from the
init and data-order streams (docs/ARCHITECTURE.md, "Random streams").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.core.datasets import Storage
from harness.data.cifar10 import PAD, Cifar10
from harness.data.source import EpochCursor, Shard, StepBatch, take_share
from harness.errors import UserError


def random_crop_flip(
    padded: Tensor, indices: Tensor, generator: torch.Generator, crop: int = 32
) -> Tensor:
    """A random ``crop`` x ``crop`` window of each ``padded[indices]``, flipped with p = 0.5.

    ``padded`` is (N, C, H, W) of any dtype, which the result keeps: (B, C, crop, crop).
    Offsets are uniform in 0..H-crop and 0..W-crop, drawn per example from ``generator``
    (same device as ``padded``); crop and flip are one gather, so nothing loops over examples
    and nothing syncs with the host. ``padded`` must be contiguous (NCHW).
    """
    if not padded.is_contiguous():
        raise ValueError("random_crop_flip: padded must be a contiguous NCHW tensor")
    device = padded.device
    b = indices.shape[0]
    _, c, h, w = padded.shape
    dy, dx, flip = _draw_crop_flip(b, h, w, crop, generator, device)
    ar = torch.arange(crop, device=device)
    rows = dy + ar
    cols = torch.where(flip, dx + (crop - 1) - ar, dx + ar)
    # One flat index into the storage: on CPU about twice as fast as 4-way advanced indexing.
    offsets = (
        indices.view(b, 1, 1, 1) * (c * h * w)
        + torch.arange(c, device=device).view(1, c, 1, 1) * (h * w)
        + rows.view(b, 1, crop, 1) * w
        + cols.view(b, 1, 1, crop)
    )
    return padded.view(-1)[offsets]


def _draw_crop_flip(
    b: int, h: int, w: int, crop: int, generator: torch.Generator, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """The augmentation's draws for a batch of ``b``: row and column offsets, flip flags; the
    only draws from ``generator`` (so replaying them moves it as a step does)."""
    dy = torch.randint(0, h - crop + 1, (b, 1), generator=generator, device=device)
    dx = torch.randint(0, w - crop + 1, (b, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (b, 1), generator=generator, device=device).bool()
    return dy, dx, flip


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Exact per-channel mean/std in [0, 1] units from a 256-bin histogram: no float copy of
    # the whole training set.
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = np.empty(x.shape[1])
    std = np.empty(x.shape[1])
    for ch in range(x.shape[1]):
        counts = np.bincount(x[:, ch].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean[ch] = counts @ levels / n
        std[ch] = np.sqrt(max(counts @ (levels - mean[ch]) ** 2 / n, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


class DeviceData:
    """CIFAR-10 resident on one device: padded uint8 train set, uint8 test set, int64 labels.

    ``mean`` / ``std`` are per-channel float32 statistics (pixel values in [0, 1]) of the
    training images in use; ``normalize`` maps uint8 images to float32 with them.
    """

    storage: ClassVar[Storage] = "device"  # harness.core.datasets: held on the device

    def __init__(
        self,
        train_padded: Tensor,
        train_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        mean: Tensor,
        std: Tensor,
        channels_last: bool = False,
        augment: bool = True,
    ) -> None:
        self.train_padded = train_padded
        self.augment = augment
        self.train_y = train_y
        self.test_x = test_x
        self.test_y = test_y
        self.mean = mean
        self.std = std
        self.channels_last = channels_last
        # Folded into one multiply-add on uint8 values: (x - 255 mean) / (255 std).
        self._shift = (mean * 255.0).view(1, -1, 1, 1)
        self._scale = (1.0 / (std * 255.0)).view(1, -1, 1, 1)

    @classmethod
    def from_arrays(
        cls,
        ds: Cifar10,
        device: torch.device,
        channels_last: bool = False,
        augment: bool = True,
        stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> DeviceData:
        """Move ``ds`` to ``device``; the train set is reflection-padded by 4 pixels once.

        ``stats``: per-channel (mean, std) in [0, 1] units; default the training images'.
        """
        if len(ds.train_y) == 0:
            raise UserError("dataset.train_size: the training split is empty")
        pad = ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD))
        padded = np.pad(ds.train_x, pad, mode="reflect")
        if stats is None:
            mean, std = _channel_stats(ds.train_x)
        else:
            mean, std = (np.asarray(v, dtype=np.float32) for v in stats)
        return cls(
            train_padded=torch.from_numpy(padded).to(device),
            train_y=torch.from_numpy(ds.train_y.astype(np.int64)).to(device),
            test_x=torch.from_numpy(np.ascontiguousarray(ds.test_x)).to(device),
            test_y=torch.from_numpy(ds.test_y.astype(np.int64)).to(device),
            mean=torch.from_numpy(mean).to(device),
            std=torch.from_numpy(std).to(device),
            channels_last=channels_last,
            augment=augment,
        )

    @property
    def device(self) -> torch.device:
        return self.train_padded.device

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images (B, 3, H, W) → float32, per-channel zero mean / unit std on train."""
        out = x.float().sub_(self._shift).mul_(self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def train_images(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented uint8 images (B, 3, 32, 32) and labels (B,) int64, not yet normalized.

        ``indices``: 1-D int64 on this device (a slice of an epoch permutation).
        ``generator``: on this device; the only source of augmentation randomness, drawn once
        for the whole batch (so micro-batching a step does not change its augmentation).
        Without augmentation the images are the padded ones' centres.
        """
        if not self.augment:
            return self.train_padded[indices, :, PAD:-PAD, PAD:-PAD], self.train_y[indices]
        crop = self.train_padded.shape[-1] - 2 * PAD  # 32 for CIFAR-10; square images
        x = random_crop_flip(self.train_padded, indices, generator, crop=crop)
        return x, self.train_y[indices]

    def train_batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented, normalized images (B, 3, 32, 32) float32 and labels (B,) int64."""
        x, y = self.train_images(indices, generator)
        return self.normalize(x), y

    def epoch_batches(
        self,
        order_seed: int,
        augment_seed: int,
        batch_size: int,
        steps: int,
        micro: int,
        shard: Shard | None = None,
        cursor: EpochCursor | None = None,
    ) -> Iterator[StepBatch]:
        """One epoch's steps (from ``cursor.step`` on, see `EpochCursor`): the order is
        ``torch.randperm(N)`` from ``order_seed`` (on the CPU), the augmentation one device
        generator from ``augment_seed`` drawn step by step; step s takes
        permutation[s·B : (s+1)·B] (a short last step when ``steps`` exceeds N // B). Every
        process of a data-parallel job draws the whole step (cheap, and the same everywhere)
        and keeps its ``shard``.

        A cursor's epoch starts at ``cursor.step`` with the generator where this device's
        draws of the steps before it leave it: re-derived from ``augment_seed`` by drawing
        them again (without the images), never set from a saved state. A saved generator
        state is the device type's own (a CPU's is 5056 bytes, a GPU's 16) and would tie a
        paused cell to the device type that paused it; the seed and step resume it on any
        device, with the same draws wherever the device is the same."""
        order = torch.Generator().manual_seed(order_seed)
        permutation = torch.randperm(self.n_train, generator=order).to(self.device)
        augment = torch.Generator(device=self.device).manual_seed(augment_seed)
        start = 0
        if cursor is not None:
            start, cursor.generator = cursor.step, augment
            self._skip_draws(
                augment,
                [len(permutation[s * batch_size : (s + 1) * batch_size]) for s in range(start)],
            )
        for step in range(start, steps):
            indices = permutation[step * batch_size : (step + 1) * batch_size]
            yield self.step_batch(indices, augment, micro, shard)

    def _skip_draws(self, generator: torch.Generator, sizes: list[int]) -> None:
        """Move ``generator`` past the augmentation draws of steps of ``sizes`` examples, as
        `train_images` would (nothing is drawn without augmentation)."""
        if not self.augment:
            return
        _, _, h, w = self.train_padded.shape
        crop = w - 2 * PAD
        for b in sizes:
            _draw_crop_flip(b, h, w, crop, generator, self.device)

    def step_batch(
        self, indices: Tensor, generator: torch.Generator, micro: int, shard: Shard | None = None
    ) -> StepBatch:
        """The step of examples ``indices`` (drawn whole, then this process's share)."""
        images, labels = self.train_images(indices, generator)
        total = int(labels.shape[0])
        return StepBatch.split(take_share(images, shard), take_share(labels, shard), micro, total)

    def warmup_batch(self, batch_size: int, micro: int, shard: Shard | None = None) -> StepBatch:
        # Any examples will do; a batch larger than the data set repeats them.
        indices = torch.arange(batch_size, device=self.device) % self.n_train
        generator = torch.Generator(device=self.device).manual_seed(0)
        return self.step_batch(indices, generator, micro, shard)

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The test set in order, normalized and un-augmented; the last batch may be short.
        With ``shard`` (rank, world): batches rank, rank + world, ... only."""
        for start in _starts(self.n_test, batch_size, shard):
            end = start + batch_size
            yield self.normalize(self.test_x[start:end]), self.test_y[start:end]

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The whole training set in order, normalized and un-augmented (the padded images'
        centres): what the paper's training-loss curves are measured on."""
        for start in _starts(self.n_train, batch_size, shard):
            end = start + batch_size
            x = self.train_padded[start:end, :, PAD:-PAD, PAD:-PAD]
            yield self.normalize(x), self.train_y[start:end]


def _starts(n: int, batch_size: int, shard: Shard | None) -> range:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    return starts if shard is None else starts[shard[0] :: shard[1]]
