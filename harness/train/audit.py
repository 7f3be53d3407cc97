"""What training actually applied, read back where it acts: tier 0 of the regression gate.

The curves' `lr`, `batch_size` and `momentum` columns are the *plan*. A bug that drops the
weight decay, ignores the lr schedule, steps the wrong batch size or feeds every epoch the same
order would leave those columns untouched, so the loop also records, per epoch, what was
really used (see `harness.results.record.AUDIT_COLUMNS` and docs/gate.md):

* the optimizer's hyper-parameters, read from its param groups after the epoch;
* the batch size stepped (from each step's index tensor) and the largest micro-batch fed to
  the model (from the images it normalized);
* the ghost size of the batch-norm modules, read from the modules;
* checksums of the data order, the augmented uint8 images and the labels, computed on the
  device as the batches go by and read once per epoch (never a host sync per step).

`AuditedData` is a `DeviceData` that sees every batch the step draws; it also casts inputs
to float64 for the "fp64" precision, so that the loop and the step need no precision branch.
`AuditedFolderData` does the same for an image folder (`FolderData`): the order checksum is
of the indices the epoch's sampler handed the DataLoader, the image and label checksums of the
micro-batches that reached the step (with N processes each loads only its share, weighted by
its global positions; the shares' sums are all-reduced once per epoch, so the checksums are
the one-process run's).
`AuditedData` also feeds a `harness.train.probe.StepProbe`, the numeric fingerprint's per-step
float64 values, when the fingerprint passes one; ordinary runs do not carry one.

`AuditedSequences` does it for a token stream (`SequenceData`): the order, input-token and
target checksums. `AUDITS` gives each way of holding a dataset its audited source.

This module owns the checksum arithmetic; `harness.analysis.gate_applied` compares the columns.

Not split: the three audited sources share the checksum weights and sums at the top, and
`Audit` reads the counters each of them keeps; a module per source would pass those helpers
and the counters' layout between four modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.core.datasets import Storage
from harness.core.epoch_record import Applied
from harness.data.device import DeviceData
from harness.data.folder import FolderData
from harness.data.source import DataSource, Shard, StepBatch
from harness.data.text import SequenceData
from harness.train.probe import StepProbe
from harness.train.replica import Replica
from harness.train.spec import TrainJob

# Checksums are sums of per-element hashes modulo a Mersenne prime, in int64 on the device:
# every product below stays under 2**62, and modular sums are exact and order-free, so the
# value does not depend on the device, the thread count or how a reduction is split.
_P = 2**31 - 1
_A = 1_103_515_245  # position weights (A * pos + C) mod P: distinct for 2**31 positions
_C = 12_345


def _weights(positions: Tensor) -> Tensor:
    return (positions * _A + _C) % _P + 1


def _pixel_weights(device: torch.device, numel: int = 3 * 32 * 32) -> Tensor:
    """A fixed weight per (channel, row, column) of an image of ``numel`` values, in
    1 .. 2**23 (so a uint8 value times its weight fits an int32)."""
    pos = torch.arange(numel, device=device, dtype=torch.int64)
    return (_weights(pos) % (2**23) + 1).to(torch.int32)


def _position_sum(values: Tensor, start: int) -> Tensor:
    """Sum of (value + 1) times the weight of its position start, start + 1, ... modulo P."""
    n = values.numel()
    w = _weights(torch.arange(start, start + n, device=values.device))
    return ((values.to(torch.int64) + 1) * w % _P).sum()


# Images per slice of the pixel checksum: (64, 3, 299, 299) in int32 is 69 MB.
_PIXEL_CHUNK = 64


def _pixel_sum(images: Tensor, weights: Tensor) -> Tensor:
    """Each image's weighted pixel sum modulo P, summed: exact and order-free."""
    flat = images.reshape(images.shape[0], -1)
    total = torch.zeros((), dtype=torch.int64, device=images.device)
    for part in flat.split(_PIXEL_CHUNK):
        total += ((part.to(torch.int32) * weights).sum(1, dtype=torch.int64) % _P).sum()
    return total


def state_problem(state: object, steps: int, batch: int) -> str | None:
    """Why `state` cannot be `AuditedData.state()` after `steps` whole steps of `batch`
    examples (a mid-epoch checkpoint's, harness.train.checkpoint.check_progress); None if it
    can. Its position is the examples drawn (the steps before a pause are whole), its batch
    the step's, its micro-batch at most that, its three sums residues modulo P: a counter
    deleted or edited would end the epoch "ok" with wrong tier-0 checksums."""
    if not isinstance(state, dict) or not {"sums", "position", "batch", "micro"} <= state.keys():
        return "its audit counters are missing"
    position, drawn, micro = state["position"], state["batch"], state["micro"]
    if position != steps * batch or type(position) is not int:
        return f"audit position {position!r} after {steps} steps of {batch} ({steps * batch})"
    if drawn != batch or type(drawn) is not int:
        return f"audit batch {drawn!r} in an epoch of batch {batch}"
    if type(micro) is not int or not 1 <= micro <= batch:
        return f"audit micro-batch {micro!r}, not in 1..{batch}"
    sums = state["sums"]
    if (
        not isinstance(sums, Tensor)
        or sums.shape != (3,)
        or sums.dtype != torch.int64
        or not bool(((sums >= 0) & (sums < _P)).all())
    ):
        return "audit checksums that are not three residues modulo 2**31 - 1"
    return None


class AuditedData(DeviceData):
    """`DeviceData` sharing another's tensors, that checksums every training batch it hands out.

    Also the precision seam: with "fp64" the images it normalizes come out in float64.
    """

    # An epoch can stop between two steps and go on later (`state`, `restore`).
    resumable: ClassVar[bool] = True

    def __init__(self, inner: DeviceData, dtype: torch.dtype, probe: StepProbe | None) -> None:
        super().__init__(
            train_padded=inner.train_padded,
            train_y=inner.train_y,
            test_x=inner.test_x,
            test_y=inner.test_y,
            mean=inner.mean,
            std=inner.std,
            channels_last=inner.channels_last,
            augment=inner.augment,
        )
        self._dtype = dtype
        self._probe = probe
        self._pixel_w = _pixel_weights(self.device)
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros(3, dtype=torch.int64, device=self.device)
        self.sums = zero  # order, augmentation, labels: modulo _P
        self.position = 0  # examples drawn this epoch
        self.batch = 0  # largest step
        self.micro = 0  # largest micro-batch normalized for training
        self._in_test = False

    def state(self) -> dict[str, Any]:
        """The epoch's counters so far (a mid-epoch checkpoint, harness.train.preempt)."""
        return {
            "sums": self.sums.clone(),
            "position": self.position,
            "batch": self.batch,
            "micro": self.micro,
        }

    def add_other_shares(self, all_reduce: Callable[[list[Tensor]], None]) -> None:
        """Nothing to add: every process draws (and checksums) the whole step."""

    def restore(self, state: dict[str, Any]) -> None:
        self.sums = state["sums"].to(device=self.device, dtype=torch.int64).clone()
        self.position = int(state["position"])
        self.batch = int(state["batch"])
        self.micro = int(state["micro"])

    def train_images(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        images, labels = super().train_images(indices, generator)
        n = indices.numel()
        order = _position_sum(indices, self.position)
        flat = images.reshape(n, -1).to(torch.int32)
        if flat.shape[1] == self._pixel_w.numel():
            pixels = (flat * self._pixel_w).sum(1, dtype=torch.int64) % _P
        else:  # another image shape: unweighted, still exact
            pixels = flat.sum(1, dtype=torch.int64)
        label = _position_sum(labels, self.position)
        self.sums = (self.sums + torch.stack([order, pixels.sum(), label])) % _P
        self.position += n
        self.batch = max(self.batch, n)
        if self._probe is not None:
            self._probe.train_batch(labels)
        return images, labels

    def normalize(self, x: Tensor) -> Tensor:
        if not self._in_test:
            self.micro = max(self.micro, int(x.shape[0]))
        out = super().normalize(x)
        return out if self._dtype == torch.float32 else out.to(self._dtype)

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from _test_batches(self, super().test_batches(batch_size, shard))

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from _train_eval_batches(self, super().train_eval_batches(batch_size, shard))


class AuditedFolderData:
    """A `FolderData` whose training steps are checksummed as they reach the step (see the
    module docstring); the same counters as `AuditedData`, and the same fp64 seam."""

    storage: ClassVar[Storage] = "stream"
    # A DataLoader cannot start mid-epoch: a paused epoch is trained again from its start.
    resumable: ClassVar[bool] = False

    def __init__(
        self, inner: FolderData, dtype: torch.dtype, probe: StepProbe | None = None
    ) -> None:
        if probe is not None:  # the fingerprint's per-step probe follows DeviceData's draws
            raise TypeError("a StepProbe needs DeviceData, not an image folder")
        self.inner = inner
        self._dtype = dtype
        self._pixel_w = _pixel_weights(inner.device, 3 * inner.image_size**2)
        self.reset()

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def n_train(self) -> int:
        return self.inner.n_train

    @property
    def n_test(self) -> int:
        return self.inner.n_test

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        raise TypeError("an image folder's epoch is not resumed mid-way")

    def reset(self) -> None:
        self._device_sums = torch.zeros(3, dtype=torch.int64, device=self.device)
        # The order is the sampler's, on the host: summed there (a per-step copy of the
        # indices to the device would wait for the device's queue).
        self._order = torch.zeros((), dtype=torch.int64)
        self.position = 0
        self.batch = 0
        self.micro = 0

    def add_other_shares(self, all_reduce: Callable[[list[Tensor]], None]) -> None:
        """Data parallelism: each process loaded only its share, weighted by its global
        positions, so the sum over processes is the whole step's checksum, as one process
        would have it (once per epoch, before `sums` is read)."""
        all_reduce([self._device_sums])

    @property
    def sums(self) -> Tensor:
        """order, augmentation, labels: modulo _P (as `AuditedData.sums`)."""
        order = torch.stack([self._order, torch.tensor(0), torch.tensor(0)]).to(self.device)
        return (self._device_sums + order) % _P

    def epoch_batches(
        self,
        order_seed: int,
        augment_seed: int,
        batch_size: int,
        steps: int,
        micro: int,
        shard: Shard | None = None,
    ) -> Iterator[StepBatch]:
        batches = self.inner.epoch_batches(
            order_seed, augment_seed, batch_size, steps, micro, shard
        )
        for step, batch in enumerate(batches):
            indices = torch.from_numpy(self.inner.step_indices(step))
            self._order = (self._order + _position_sum(indices, self.position)) % _P
            start = self.position + (0 if shard is None else shard.bounds(batch_size)[0])
            self.position += int(indices.numel())
            self.batch = max(self.batch, int(indices.numel()))
            yield StepBatch(batch.size, batch.count, self._watch(batch, start), batch.total)

    def _watch(self, batch: StepBatch, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in batch.micro_batches:
            zero = torch.zeros((), dtype=torch.int64, device=self.device)
            pixels, label = _pixel_sum(x, self._pixel_w), _position_sum(y, start)
            self._device_sums = (self._device_sums + torch.stack([zero, pixels, label])) % _P
            start += int(y.shape[0])
            yield x, y

    def warmup_batch(self, batch_size: int, micro: int, shard: Shard | None = None) -> StepBatch:
        return self.inner.warmup_batch(batch_size, micro, shard)

    def normalize(self, x: Tensor) -> Tensor:
        # Only training calls this: evaluation batches come normalized from the inner source.
        self.micro = max(self.micro, int(x.shape[0]))
        out = self.inner.normalize(x)
        return out if self._dtype == torch.float32 else out.to(self._dtype)

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._eval(self.inner.test_batches(batch_size, shard))

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self._eval(self.inner.train_eval_batches(batch_size, shard))

    def _eval(self, batches: Iterator[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        # The inner source normalizes its evaluation batches itself; only the dtype changes.
        for x, y in batches:
            yield (x if self._dtype == torch.float32 else x.to(self._dtype)), y


class AuditedSequences(SequenceData):
    """A `SequenceData` sharing another's streams, that checksums every step it hands out:
    the order (the windows' indices), the input tokens (in the augmentation column: a
    sequence kind has no augmentation, so that column checksums what the model was fed) and
    the target tokens, each weighted by its position in the epoch. Token ids stay int64 at
    every precision (the model's embedding gives float64 under "fp64"). An epoch can stop
    between two steps and go on later, its counters saved and restored as `AuditedData`'s."""

    resumable: ClassVar[bool] = True

    def __init__(
        self, inner: SequenceData, dtype: torch.dtype, probe: StepProbe | None = None
    ) -> None:
        super().__init__(inner.train, inner.test, inner.block, inner.n_train, inner.n_test)
        self._probe = probe
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, dtype=torch.int64, device=self.device)
        self.position = 0
        self.batch = 0
        self.micro = 0
        self._in_test = False

    def state(self) -> dict[str, Any]:
        """The epoch's counters so far (a mid-epoch checkpoint, harness.train.preempt)."""
        return {
            "sums": self.sums.clone(),
            "position": self.position,
            "batch": self.batch,
            "micro": self.micro,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.sums = state["sums"].to(device=self.device, dtype=torch.int64).clone()
        self.position = int(state["position"])
        self.batch = int(state["batch"])
        self.micro = int(state["micro"])

    def add_other_shares(self, all_reduce: Callable[[list[Tensor]], None]) -> None:
        """Nothing to add: every process draws (and checksums) the whole step."""

    def train_windows(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        x, y = super().train_windows(indices)
        n = indices.numel()
        start = self.position * self.block % _P  # weights are taken modulo P anyway
        order = _position_sum(indices, self.position)
        tokens = _position_sum(x.reshape(-1), start)
        targets = _position_sum(y.reshape(-1), start)
        self.sums = (self.sums + torch.stack([order, tokens, targets])) % _P
        self.position += n
        self.batch = max(self.batch, n)
        if self._probe is not None:
            self._probe.train_batch(y)
        return x, y

    def normalize(self, x: Tensor) -> Tensor:
        if not self._in_test:
            self.micro = max(self.micro, int(x.shape[0]))
        return x

    def test_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from _test_batches(self, super().test_batches(batch_size, shard))

    def train_eval_batches(
        self, batch_size: int, shard: Shard | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        yield from _train_eval_batches(self, super().train_eval_batches(batch_size, shard))


def _test_batches(
    source: AuditedData | AuditedSequences, batches: Iterator[tuple[Tensor, Tensor]]
) -> Iterator[tuple[Tensor, Tensor]]:
    """The test batches of an audited source held on the device: not training micro-batches
    (`micro` ignores them), each shown to the probe, which is told where the test set ends."""
    source._in_test = True
    try:
        for x, y in batches:
            if source._probe is not None:
                source._probe.test_batch(y)
            yield x, y
    finally:
        source._in_test = False
    if source._probe is not None:
        source._probe.end_test()


def _train_eval_batches(
    source: AuditedData | AuditedSequences, batches: Iterator[tuple[Tensor, Tensor]]
) -> Iterator[tuple[Tensor, Tensor]]:
    """The training-set evaluation batches of such a source: not training micro-batches, and
    neither a step's nor a test batch, so the probe looks away."""
    source._in_test = True
    if source._probe is not None:
        source._probe.end_test()
    try:
        yield from batches
    finally:
        source._in_test = False


AuditedSource = AuditedData | AuditedFolderData | AuditedSequences
# The audit of each way a dataset kind is held (harness.core.datasets.Storage; each source
# class says its own as `storage`): a new kind held one of these ways needs nothing here.
AUDITS: dict[Storage, Callable[[Any, torch.dtype, StepProbe | None], AuditedSource]] = {
    "device": AuditedData,
    "stream": AuditedFolderData,
    "sequences": AuditedSequences,
}


def _agreed(values: list[Any]) -> Any:
    """The one value all param groups hold; None if they disagree (or there are none)."""
    plain = [float(v) if isinstance(v, Tensor) else v for v in values]
    return plain[0] if plain and all(v == plain[0] for v in plain) else None


def ghost_size(model: nn.Module) -> int:
    """The batch-norm modules' ghost size: 0 if they are plain batch norm, -1 if they differ."""
    sizes = {
        int(getattr(m, "ghost_size", 0))
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or hasattr(m, "ghost_size")
    }
    return sizes.pop() if len(sizes) == 1 else (0 if not sizes else -1)


class Audit:
    """One cell's tier-0 record: wrap its data once, then `begin_epoch` / `end_epoch`."""

    def __init__(
        self,
        job: TrainJob,
        data: DataSource,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        probe: StepProbe | None = None,
        replica: Replica | None = None,
    ) -> None:
        dtype = torch.float64 if job.precision == "fp64" else torch.float32
        self._replica = replica
        audited = AUDITS.get(getattr(data, "storage", None))  # type: ignore[arg-type]
        if audited is None:
            raise TypeError(f"no audit for a {type(data).__name__}: wrap it in DeviceData")
        self.data: AuditedSource = audited(data, dtype, probe)
        self._model = model
        self._optimizer = optimizer
        if probe is not None:
            probe.attach(model, optimizer)

    def begin_epoch(self, resume: dict[str, Any] | None = None) -> None:
        """Start an epoch's counters; `resume`: those of a mid-epoch checkpoint (`state`)."""
        self.data.reset()
        if resume and self.data.resumable:
            self.data.restore(resume)

    @property
    def resumable(self) -> bool:
        """Whether an epoch can stop between two steps and go on later (see `state`): the
        device-resident source can; an image folder's DataLoader cannot start mid-epoch."""
        return self.data.resumable

    def state(self) -> dict[str, Any]:
        return self.data.state()

    def end_epoch(self) -> Applied:
        """This epoch's applied values and checksums (one host read): the record's part."""
        groups = self._optimizer.param_groups
        lr = _agreed([g["lr"] for g in groups])
        # Adam has no momentum coefficient; the plan counts it as 0 (docs/ARCHITECTURE.md).
        momentum = _agreed([g.get("momentum", 0.0) for g in groups])
        nesterov = _agreed([bool(g.get("nesterov", False)) for g in groups])
        decay = _agreed([g.get("weight_decay", 0.0) for g in groups])
        if self._replica is not None:
            self.data.add_other_shares(self._replica.all_reduce)
        order, augment, label = self.data.sums.tolist()
        return Applied(
            applied_lr=math.nan if lr is None else float(lr),
            applied_momentum=math.nan if momentum is None else float(momentum),
            applied_nesterov=nesterov,
            applied_weight_decay=math.nan if decay is None else float(decay),
            applied_batch_size=self.data.batch,
            applied_micro_batch=self.data.micro,
            ghost_size=ghost_size(self._model),
            order_checksum=int(order),
            augment_checksum=int(augment),
            label_checksum=int(label),
        )
