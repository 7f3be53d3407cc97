"""Timing of training steps: the harness's real step beside a plain PyTorch reference loop.

What `harness bench` measures (the app layer adds provenance and writes the rows):

* **harness**: `train_step` exactly as a cell runs it (DeviceData augmentation on the device,
  ghost batch norm, even micro-batches, fused optimizer update).
* **reference**: what a PyTorch user would write first: a ``torch.utils.data.DataLoader``
  over the same uint8 images with per-image random crop + flip on the CPU, the same
  architecture with ``nn.BatchNorm2d``, ``torch.optim.SGD``, one forward per step.

Honest timing (docs/ARCHITECTURE.md, "Rules that keep it so"): every shape runs untimed first
(the first call, with any compilation, is reported apart as `warmup_s`); the device is
synchronized before every clock read; each measurement is `repeats` timed runs of `steps` steps,
reported as the median with the min-max spread. Host syncs per step are counted in one untimed
eager step.

Interleaved (`interleave`): the implementations compared are all built and warmed first, then
timed round by round (one repeat of each per round), so a change in the machine's load falls on
all of them alike; a ratio is taken within each round, and reported as its min, median and max
over the rounds (`ratios`). Timed back to back, one neighbour's burst could move a ratio from
1.1 to 0.3 (issue 46).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.execution import Execution
from harness.core.factory_spec import FactoryRef
from harness.data.device import DeviceData
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.ghost_convert import GhostBatchNorm1d, GhostBatchNorm3d
from harness.models.registry import build_model
from harness.train.optim import build_optimizer
from harness.train.runtime import autocast, synchronize
from harness.train.spec import OptimizerConfig
from harness.train.step import step_micro_batch, train_step

# The paper's CIFAR-10 recipe, for the update's cost only (the values do not matter).
BENCH_OPTIMIZER = OptimizerConfig(kind="momentum", lr=0.05, momentum=0.9, weight_decay=5e-4)
SYNC_OPS = ("_local_scalar_dense", "item", "is_nonzero", "nonzero")


@dataclass(frozen=True)
class BenchSetup:
    model: str  # a registry name (ignored with `factory`)
    model_params: dict[str, int]
    batch_size: int  # images per optimizer step
    ghost_size: int = 128
    precision: str = "fp32"
    compile: bool = False
    # With compile: "reduce-overhead" is the captured step (CUDA graphs on a GPU).
    compile_mode: str = "default"
    max_micro_batch: int | None = None
    channels_last: bool = False
    steps: int = 5  # per timed repeat
    repeats: int = 3
    workers: int = 0  # DataLoader workers of the reference loop
    factory: FactoryRef | None = None  # a model from the user's code, ghost batch norm applied


@dataclass(frozen=True)
class Measurement:
    impl: str  # "harness" or "reference"
    micro_batch: int
    step_times_s: list[float]  # median seconds per step of each repeat
    images_per_step: int
    warmup_s: float  # first calls of every shape, compilation included
    peak_memory_bytes: int | None
    syncs_per_step: float | None
    # Compiled steps: graphs inductor would not capture ("skipping cudagraphs due to ...");
    # None for an eager step.
    cudagraph_skips: int | None = None

    @property
    def step_time_s(self) -> float:
        return statistics.median(self.step_times_s)

    @property
    def images_per_s(self) -> float:
        return self.images_per_step / self.step_time_s

    @property
    def images_per_s_range(self) -> tuple[float, float]:
        return (
            self.images_per_step / max(self.step_times_s),
            self.images_per_step / min(self.step_times_s),
        )


def count_syncs(fn: Callable[[], Any]) -> int:
    """How many times `fn` reads a device value on the host (the aten ops behind .item(),
    bool(t), nonzero, ...). Eager code only: a compiled region hides its ops from the mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = 0

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            nonlocal calls
            if func.overloadpacket.__name__ in SYNC_OPS:
                calls += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return calls


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    # On the CPU the process's max RSS only grows, so it cannot be given per measurement.
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


@dataclass(frozen=True)
class Prepared:
    """An implementation built and warmed, ready to be timed: what `Measurement` needs but
    the times."""

    impl: str
    step: Callable[[], Any]
    micro_batch: int
    images_per_step: int
    warmup_s: float
    syncs_per_step: float | None
    cudagraph_skips: int | None
    steps: int


def _time_once(prepared: Prepared, device: torch.device) -> float:
    """Seconds per step of one timed repeat of `prepared.steps` steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(prepared.steps):
        prepared.step()
    synchronize(device)
    return (time.perf_counter() - start) / prepared.steps


def interleave(
    prepared: Sequence[Prepared], device: torch.device, repeats: int
) -> list[Measurement]:
    """Time every implementation `repeats` times, round by round: round r runs one repeat of
    each, in the order given. Each `Measurement` keeps its times in round order, so that
    `ratios` can pair them; its peak memory is the largest of its repeats'."""
    times: list[list[float]] = [[] for _ in prepared]
    peaks: list[int | None] = [None for _ in prepared]
    for _ in range(repeats):
        for i, p in enumerate(prepared):
            _reset_peak(device)
            times[i].append(_time_once(p, device))
            peak = _peak(device)
            if peak is not None:
                peaks[i] = max(peak, peaks[i] or 0)
    return [
        Measurement(
            p.impl,
            p.micro_batch,
            t,
            p.images_per_step,
            p.warmup_s,
            peak,
            p.syncs_per_step,
            p.cudagraph_skips,
        )
        for p, t, peak in zip(prepared, times, peaks, strict=True)
    ]


def ratios(a: Measurement, b: Measurement) -> tuple[float, float, float]:
    """Min, median and max over the rounds of a's images/s over b's, each round's ratio from
    that round's repeats of the two (`interleave`)."""
    per_round = [
        (a.images_per_step / ta) / (b.images_per_step / tb)
        for ta, tb in zip(a.step_times_s, b.step_times_s, strict=True)
    ]
    return min(per_round), statistics.median(per_round), max(per_round)


def _build(setup: BenchSetup, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        setup.model,
        setup.model_params,
        num_classes=10,
        ghost_size=setup.ghost_size,
        factory=setup.factory,
    )
    model = model.to(device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def bench_harness(setup: BenchSetup, data: DeviceData) -> Measurement:
    """Images/s of the harness's own `train_step` at `setup.batch_size`, timed alone."""
    return interleave([prepare_harness(setup, data)], data.device, setup.repeats)[0]


def prepare_harness(setup: BenchSetup, data: DeviceData) -> Prepared:
    """The harness's own `train_step` at `setup.batch_size`, built and warmed."""
    device = data.device
    execution = Execution(
        max_micro_batch=setup.max_micro_batch,
        channels_last=setup.channels_last,
        compile=setup.compile,
        compile_mode=setup.compile_mode,  # type: ignore[arg-type]
    )
    micro = step_micro_batch(setup.batch_size, execution, setup.ghost_size)
    base = _build(setup, device)
    optimizer = build_optimizer(base.parameters(), BENCH_OPTIMIZER, device)
    model: nn.Module = base
    if setup.compile:
        model = torch.compile(  # type: ignore[assignment]
            base, dynamic=False, mode=execution.compile_mode
        )
    skips_before = _cudagraph_skips() if setup.compile else 0
    generator = torch.Generator(device=device).manual_seed(0)
    order = torch.Generator().manual_seed(0)
    model.train()

    def step() -> torch.Tensor:
        indices = torch.randperm(data.n_train, generator=order)[: setup.batch_size]
        if indices.numel() < setup.batch_size:
            indices = _repeat(indices, setup)
        return train_step(
            model,
            optimizer,
            data,
            indices.to(device),
            micro,
            generator,
            setup.precision,
            keep_grads=execution.graphs,
        )

    _reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    # Compile / autotune: the one shape of this measurement. CUDA graph trees run the first
    # call eagerly and record the second, so a captured step replays from the third.
    for _ in range(3 if execution.graphs else 2):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    syncs = None if setup.compile else count_syncs(step)
    skips = _cudagraph_skips() - skips_before if setup.compile else None
    return Prepared("harness", step, micro, setup.batch_size, warmup_s, syncs, skips, setup.steps)


def _cudagraph_skips() -> int:
    """Graphs inductor declined to capture so far in this process (0 before any compile)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])


def _repeat(indices: torch.Tensor, setup: BenchSetup) -> torch.Tensor:
    # A batch larger than the data set (tiny synthetic benches) repeats examples.
    reps = -(-setup.batch_size // indices.numel())
    return indices.repeat(reps)[: setup.batch_size]


class CropFlipDataset(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The reference input pipeline: per image, reflection-pad 4, random 32x32 crop, random
    horizontal flip, all with torch ops on the CPU (what torchvision's transforms do)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pad: int = 4) -> None:
        self.images = images  # (N, 3, 32, 32) uint8, CPU
        self.labels = labels
        self.pad = pad

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        h, w = x.shape[-2:]
        padded = F.pad(x.unsqueeze(0).float(), (self.pad,) * 4, mode="reflect")[0]
        dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
        out = padded[:, dy : dy + h, dx : dx + w]
        if bool(torch.rand(()) < 0.5):
            out = out.flip(-1)
        return out.to(torch.uint8), self.labels[i]


_PLAIN_OF: dict[type[nn.Module], type[nn.modules.batchnorm._BatchNorm]] = {
    GhostBatchNorm1d: nn.BatchNorm1d,
    GhostBatchNorm3d: nn.BatchNorm3d,
}


def reference_model(setup: BenchSetup, device: torch.device) -> nn.Module:
    """The same architecture with every ghost batch norm replaced by the plain batch norm of
    its input's rank (a user's model may hold 1d and 3d ones), affinity and tracking kept."""
    model = _build(setup, torch.device("cpu"))

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, GhostBatchNorm2d):
                plain = _PLAIN_OF.get(type(child), nn.BatchNorm2d)
                bn = plain(
                    child.num_features,
                    eps=child.eps,
                    momentum=child.momentum,
                    affine=child.affine,
                    track_running_stats=child.track_running_stats,
                )
                bn.load_state_dict(child.state_dict())
                setattr(module, name, bn)
            else:
                swap(child)

    swap(model)
    model = model.to(device)
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def bench_reference(
    setup: BenchSetup,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> Measurement:
    """Images/s of a plain PyTorch loop (DataLoader, nn.BatchNorm2d, torch.optim.SGD), timed
    alone."""
    prepared = prepare_reference(setup, images, labels, mean, std, device)
    return interleave([prepared], device, setup.repeats)[0]


def prepare_reference(
    setup: BenchSetup,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
) -> Prepared:
    """A plain PyTorch loop (DataLoader, nn.BatchNorm2d, torch.optim.SGD), built and warmed."""
    base = reference_model(setup, device)
    model: nn.Module = base
    if setup.compile:
        model = torch.compile(base, dynamic=False)  # type: ignore[assignment]
    spec = BENCH_OPTIMIZER
    optimizer = torch.optim.SGD(
        base.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )
    dataset = CropFlipDataset(images, labels)
    sampler: torch.utils.data.Sampler[int] = (
        torch.utils.data.RandomSampler(dataset)
        if len(dataset) >= setup.batch_size
        else _Endless(len(dataset))
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=setup.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=setup.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=setup.workers > 0,
    )
    shift = (mean.to(device) * 255).view(1, -1, 1, 1)
    scale = (1 / (std.to(device) * 255)).view(1, -1, 1, 1)
    batches = _forever(loader)
    model.train()

    def step() -> None:
        x_u8, y = next(batches)
        x = (x_u8.to(device, non_blocking=True).float() - shift) * scale
        if setup.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, setup.precision):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    _reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    step()
    step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    return Prepared(
        "reference", step, setup.batch_size, setup.batch_size, warmup_s, None, None, setup.steps
    )


class _Endless(torch.utils.data.Sampler[int]):
    """Indices with replacement, enough for any batch: for data sets smaller than a batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        while True:
            yield from torch.randperm(self.n).tolist()

    def __len__(self) -> int:
        return 2**31 - 1


def _forever(loader: torch.utils.data.DataLoader[Any]) -> Iterator[Any]:
    while True:
        yield from loader
