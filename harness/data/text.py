"""Language-model data held on the device: a token stream cut into windows, as a `DataSource`.

Two readers, one source. `read_text` (`dataset: {name: text}`): any UTF-8 file, byte-level
(each byte a token, a vocabulary of 256), its last `held_out` of the bytes (default 10 %) the
validation part. `read_tokens` (`dataset: {name: tokens}`): nanoGPT's layout, DIR/train.bin
and DIR/val.bin of little-endian uint16 ids (`np.fromfile`: nothing in them is executed), every
id below `vocab_size`. Both cut their streams as harness.core.sequences says (windows of
`block_size` with stride `block_size`, target = input shifted by one) and hand a
`SequenceData`; every bad input is one line naming the `dataset:` field and the fix.

`SequenceData` holds each stream once on the device (uint8 for text, int32 for token ids) and
gathers a step's windows from it (no (N, T) copy). A step's micro-batches are (x, y), both
int64 (m, T); `normalize` is the identity (token ids are not scaled). The epoch's order is
``torch.randperm(N)`` from the data-order seed, as for the image sources (harness.data.source),
and there is no augmentation (a suite's `augment: true` is refused for these kinds); the
augmentation seed is unused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.core.datasets import Storage
from harness.core.sequences import HELD_OUT, TOKEN_FILES, text_split, windows
from harness.data.request import LoadRequest
from harness.data.source import EpochCursor, Shard, StepBatch, take_share
from harness.errors import UserError


class SequenceData:
    """Training and held-out token streams on one device, cut into windows of `block`."""

    storage: ClassVar[Storage] = "sequences"  # harness.core.datasets

    def __init__(self, train: Tensor, test: Tensor, block: int, n_train: int, n_test: int) -> None:
        self.train = train
        self.test = test
        self.block = block
        self._n_train = n_train
        self._n_test = n_test
        self._offsets = torch.arange(block + 1, device=train.device)

    @property
    def device(self) -> torch.device:
        return self.train.device

    @property
    def n_train(self) -> int:
        return self._n_train

    @property
    def n_test(self) -> int:
        return self._n_test

    def normalize(self, x: Tensor) -> Tensor:
        return x

    def windows(self, stream: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Windows `indices` of `stream`: inputs and targets, int64 (len(indices), block)."""
        rows = stream[indices.view(-1, 1) * self.block + self._offsets].long()
        return rows[:, :-1], rows[:, 1:]

    def train_windows(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The training windows `indices` (a slice of an epoch's permutation)."""
        return self.windows(self.train, indices)

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
        """Step s takes permutation[s·B : (s+1)·B] of ``torch.randperm(N)`` drawn on the CPU
        from ``order_seed``; every process draws the whole step and keeps its ``shard``. With
        a ``cursor`` the epoch starts at ``cursor.step`` (nothing else to restore: the order
        is a function of its seed, and nothing is augmented)."""
        order = torch.Generator().manual_seed(order_seed)
        permutation = torch.randperm(self.n_train, generator=order).to(self.device)
        for step in range(0 if cursor is None else cursor.step, steps):
            indices = permutation[step * batch_size : (step + 1) * batch_size]
            yield self.step_batch(indices, micro, shard)

    def step_batch(self, indices: Tensor, micro: int, shard: Shard | None = None) -> StepBatch:
        x, y = self.train_windows(indices)
        total = int(y.shape[0])
        return StepBatch.split(take_share(x, shard), take_share(y, shard), micro, total)

    def warmup_batch(self, batch_size: int, micro: int, shard: Shard | None = None) -> StepBatch:
        indices = torch.arange(batch_size, device=self.device) % self.n_train
        return self.step_batch(indices, micro, shard)

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The held-out windows in order; the last batch may be short."""
        yield from self._in_order(self.test, self.n_test, batch_size, shard)

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The training windows in order (what a training-loss curve is measured on)."""
        yield from self._in_order(self.train, self.n_train, batch_size, shard)

    def _in_order(
        self, stream: Tensor, n: int, batch_size: int, shard: Shard | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = range(0, n, batch_size)
        if shard is not None:
            starts = starts[shard[0] :: shard[1]]
        for start in starts:
            indices = torch.arange(start, min(n, start + batch_size), device=self.device)
            yield self.windows(stream, indices)


def _sized(request: LoadRequest, counts: tuple[int, int], what: str) -> tuple[int, int]:
    """The examples used: the files' windows, capped by train_size / test_size."""
    spec = request.spec
    n_train, n_test = counts
    block = spec.block_size
    if n_train < 1:
        raise UserError(
            f"dataset.block_size: {what}'s training part holds no window of {block} + 1 "
            "tokens; give a longer file or a smaller block_size"
        )
    if n_test < 1:
        raise UserError(
            f"dataset.block_size: {what}'s held-out part holds no window of {block} + 1 "
            "tokens; give a longer file, a larger held_out or a smaller block_size"
        )
    if spec.train_size is not None and spec.train_size > n_train:
        raise UserError(
            f"dataset.train_size: {what} holds {n_train} training windows of {block}; "
            f"give train_size <= {n_train}"
        )
    if spec.train_size is None and spec.n_train != n_train:  # the file changed since planned
        raise UserError(
            f"dataset.path: {what} holds {n_train} training windows, the plan {spec.n_train}; "
            "run the command again on the file as it is now"
        )
    n_test = n_test if spec.test_size is None else min(n_test, spec.test_size)
    return spec.train_size or n_train, n_test


def _on_device(
    request: LoadRequest, train: np.ndarray, test: np.ndarray, what: str, source: str
) -> tuple[SequenceData, str]:
    block = request.spec.block_size
    assert block is not None  # a sequence kind needs it
    n_train, n_test = _sized(request, (windows(len(train), block), windows(len(test), block)), what)
    # Only what the windows read goes to the device.
    train, test = train[: n_train * block + 1], test[: n_test * block + 1]
    data = SequenceData(
        torch.from_numpy(np.array(train)).to(request.device),
        torch.from_numpy(np.array(test)).to(request.device),
        block,
        n_train,
        n_test,
    )
    return data, source


def read_text(request: LoadRequest) -> tuple[SequenceData, str]:
    """The `text` kind: the file at `dataset.path` as bytes; its source is its sha256."""
    spec = request.spec
    assert spec.path is not None  # needed by the kind
    path = Path(spec.path).expanduser()
    where = f"dataset.path: {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{where}: no such file; give a UTF-8 text file") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror}); give a readable file") from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{where}: not UTF-8 (byte {exc.start}); give a UTF-8 text file, or tokenize it "
            "and use name: tokens"
        ) from None
    stream = np.frombuffer(raw, dtype=np.uint8)
    split = text_split(len(stream), HELD_OUT if spec.held_out is None else spec.held_out)
    source = f"text sha256:{hashlib.sha256(raw).hexdigest()}"
    return _on_device(request, stream[:split], stream[split:], str(path), source)


def read_tokens(request: LoadRequest) -> tuple[SequenceData, str]:
    """The `tokens` kind: DIR/train.bin and DIR/val.bin (uint16 ids below `vocab_size`)."""
    spec = request.spec
    assert spec.path is not None and spec.vocab_size is not None  # needed by the kind
    root = Path(spec.path).expanduser()
    streams, digest = [], hashlib.sha256()
    for name in TOKEN_FILES:
        path = root / name
        where = f"dataset.path: {path}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"{where}: no such file; give the folder holding train.bin and val.bin"
            ) from None
        except OSError as exc:
            raise UserError(f"{where}: cannot be read ({exc.strerror})") from None
        if len(raw) % 2:
            raise UserError(
                f"{where}: {len(raw)} bytes, not a whole number of uint16 ids; write it with "
                "np.array(ids, dtype=np.uint16).tofile(...)"
            )
        ids = np.frombuffer(raw, dtype="<u2")
        top = int(ids.max()) if len(ids) else -1
        if top >= spec.vocab_size:
            raise UserError(
                f"dataset.vocab_size: {path} holds token id {top}, not below vocab_size "
                f"{spec.vocab_size}; give vocab_size {top + 1} or more"
            )
        digest.update(raw)
        streams.append(ids.astype(np.int32))
    source = f"tokens sha256:{digest.hexdigest()}"
    return _on_device(request, streams[0], streams[1], str(root), source)
