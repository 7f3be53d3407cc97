"""What training asks of a dataset: an epoch's step batches, evaluation batches, normalization.

Two sources implement it: `harness.data.device.DeviceData` (CIFAR-10 resident on the device,
augmented with tensor ops) and `harness.data.folder.FolderData` (an ImageNet-style folder
decoded by DataLoader workers). The training loop has one path for both: per epoch it asks
for `epoch_batches(order_seed, augment_seed, B, steps, micro, shard)` and runs one optimizer
update per `StepBatch`; both sources draw the order as ``torch.randperm(N)`` from
``order_seed``, so a seed visits the examples in the same order whatever the source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

Shard = tuple[int, int]  # (rank, world): this process's share of each step (data parallelism)


@dataclass(frozen=True)
class StepBatch:
    """One optimizer step's examples for this process, as the micro-batches the step runs.

    ``size``: examples in this process's share (the divisor of the mean loss); ``count``: how
    many micro-batches ``micro_batches`` yields; ``micro_batches``: (uint8 images (m, 3, H, W),
    int64 labels (m,)) on the device, in step order, to be iterated once. A loader's batches
    arrive while the step consumes them, so a step never holds all of B on the device.
    """

    size: int
    count: int
    micro_batches: Iterable[tuple[Tensor, Tensor]]

    @classmethod
    def split(cls, images: Tensor, labels: Tensor, micro: int) -> StepBatch:
        """A drawn batch cut into micro-batches of ``micro`` (shapes only: no host sync)."""
        chunks = list(zip(images.split(micro), labels.split(micro)))
        return cls(int(labels.shape[0]), len(chunks), chunks)


def take_share(x: Tensor, shard: Shard | None) -> Tensor:
    """Rank r's contiguous share of a step's batch: rows [r·B/W, (r+1)·B/W)."""
    if shard is None:
        return x
    rank, world = shard
    share = x.shape[0] // world
    return x[rank * share : (rank + 1) * share]


class DataSource(Protocol):
    """The interface `harness.train` uses (see the module docstring)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def n_train(self) -> int: ...

    @property
    def n_test(self) -> int: ...

    def normalize(self, x: Tensor) -> Tensor: ...

    def epoch_batches(
        self,
        order_seed: int,
        augment_seed: int,
        batch_size: int,
        steps: int,
        micro: int,
        shard: Shard | None = None,
    ) -> Iterator[StepBatch]: ...

    def warmup_batch(self, batch_size: int, micro: int, shard: Shard | None = None) -> StepBatch:
        """Any batch of the step's shape (warm-up runs the real step, then restores state)."""
        ...

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]: ...

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]: ...
