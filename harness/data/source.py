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
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from harness.core.datasets import Storage


class Shard(NamedTuple):
    """This process's share of each step (data parallelism): whole ``unit``s of the batch.

    A step of B examples is S = B / unit units (ghost slices, so that batch norm sees the
    slices one process would); rank r takes a contiguous run of floor(S / world) of them, the
    first S mod world ranks one more. The shares concatenate to the step in rank order. Uneven
    shares change no number: each process's loss is scaled by world / B (see
    `harness.train.step.train_on`), so the average DDP takes is the mean over all B.
    """

    rank: int
    world: int
    unit: int = 1

    def bounds(self, batch: int) -> tuple[int, int]:
        """[start, stop) of this process's share of a step of ``batch`` examples."""
        slices, rest = divmod(batch, self.unit)
        if rest or slices < self.world:
            raise ValueError(
                f"a step of {batch} is not {self.world} or more whole units of {self.unit}"
            )
        base, extra = divmod(slices, self.world)
        start = self.unit * (self.rank * base + min(self.rank, extra))
        return start, start + self.unit * (base + (1 if self.rank < extra else 0))

    def size(self, batch: int) -> int:
        start, stop = self.bounds(batch)
        return stop - start


@dataclass(frozen=True)
class StepBatch:
    """One optimizer step's examples for this process, as the micro-batches the step runs.

    ``size``: examples in this process's share; ``count``: how many micro-batches
    ``micro_batches`` yields; ``micro_batches``: (uint8 images (m, 3, H, W), int64 labels (m,))
    on the device, in step order, to be iterated once; ``total``: the whole step's B over
    every process (the divisor of the mean loss; ``size`` when None). A loader's batches
    arrive while the step consumes them, so a step never holds all of B on the device.
    """

    size: int
    count: int
    micro_batches: Iterable[tuple[Tensor, Tensor]]
    total: int | None = None

    @property
    def step_size(self) -> int:
        """B: the examples of the whole step, every process's share together."""
        return self.size if self.total is None else self.total

    @classmethod
    def split(
        cls, images: Tensor, labels: Tensor, micro: int, total: int | None = None
    ) -> StepBatch:
        """A drawn batch cut into micro-batches of ``micro`` (shapes only: no host sync)."""
        chunks = list(zip(images.split(micro), labels.split(micro)))
        return cls(int(labels.shape[0]), len(chunks), chunks, total)


@dataclass
class EpochCursor:
    """Where an epoch's draw starts, and (once it runs) the generator that draws it.

    A source that can resume an epoch mid-way (`DeviceData`) starts at step ``step``, its
    augmentation generator moved past the draws of the steps before (re-derived from the
    epoch's seed, so on any device), and puts that generator in ``generator``: read between
    two steps, its state is where the next step's draw begins (harness.train.preempt). The
    order needs no state: it is a pure function of its seed.
    """

    step: int = 0
    generator: torch.Generator | None = None


def take_share(x: Tensor, shard: Shard | None) -> Tensor:
    """This process's contiguous share of a step's batch (`Shard.bounds`)."""
    if shard is None:
        return x
    start, stop = shard.bounds(x.shape[0])
    return x[start:stop]


class DataSource(Protocol):
    """The interface `harness.train` uses (see the module docstring)."""

    @property
    def storage(self) -> Storage:
        """How the source holds its examples: its audit is `harness.train.audit.AUDITS[storage]`."""
        ...

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
