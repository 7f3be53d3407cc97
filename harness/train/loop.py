"""Train one cell: follow its plan exactly, measure honestly, checkpoint every epoch.

`train_cell` owns only the order of events (build, resume, per epoch: enter the phase, train,
evaluate, record, checkpoint); everything else is a named function below.

Reproducibility contract: three random streams derive from the cell's seed. Initialization
uses one seed; each epoch's data order and augmentation use seeds that are pure functions of
(seed, epoch). So cells with the same seed start from the same weights and visit examples in
the same order whatever their schedule, and a resumed run (which restarts at an epoch
boundary) draws exactly what an uninterrupted run would have drawn.

Timing contract: device work is asynchronous, so clocks are read only after a synchronize, and
only at epoch boundaries (never inside the step). Training, evaluation, warm-up and the rest
(checkpointing, bookkeeping) are separate totals.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.config.suite import Cell, ExecutionSpec
from harness.core.schedule import Phase, updates_per_epoch
from harness.data.device import DeviceData
from harness.fsio import atomic_path
from harness.models.registry import build_model
from harness.train.optim import build_optimizer, set_hyperparameters

CHECKPOINT_VERSION = 1


def stream_seed(seed: int, *stream: object) -> int:
    """A 63-bit seed for one named random stream of a cell; stable across runs and machines."""
    key = "/".join(str(s) for s in (seed, *stream)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


@dataclass
class Progress:
    """What a cell has done so far; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    updates: int = 0  # optimizer steps completed
    images: int = 0  # training images seen (a partial last batch counts what it holds)
    curves: list[dict[str, Any]] = field(default_factory=list)
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    warmup_time_s: float = 0.0
    wall_clock_s: float = 0.0  # earlier segments of a resumed cell
    started_at: float = field(default_factory=time.time)
    status: str = "ok"
    error: str | None = None


@dataclass(frozen=True)
class CellResult:
    progress: Progress
    peak_memory_bytes: int

    @property
    def final(self) -> dict[str, float]:
        evaluated = [c for c in self.progress.curves if not math.isnan(c["test_acc"])]
        last = self.progress.curves[-1] if self.progress.curves else {}
        return {
            "final_test_acc": evaluated[-1]["test_acc"] if evaluated else math.nan,
            "best_test_acc": max((c["test_acc"] for c in evaluated), default=math.nan),
            "final_test_loss": evaluated[-1]["test_loss"] if evaluated else math.nan,
            "final_train_loss": last.get("train_loss", math.nan),
        }


EpochCallback = Callable[[Cell, dict[str, Any]], None]


def synchronize(device: torch.device) -> None:
    """Wait for queued device work; the only way to read a clock honestly on an accelerator."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 under bf16 autocast; float64 stays float64 (exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def micro_batch_size(batch: int, execution: ExecutionSpec, ghost: int) -> int:
    """Largest micro-batch not above max_micro_batch, a multiple of the ghost size."""
    limit = execution.max_micro_batch
    if limit is None or limit >= batch:
        return batch
    return max(ghost, limit // ghost * ghost)


def build(cell: Cell, device: torch.device, execution: ExecutionSpec) -> torch.nn.Module:
    """The cell's model with its seeded initial weights (drawn on the CPU: same on any device)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cell.seed, "init"))
        model = build_model(
            cell.model.name,
            cell.model.model_dump(exclude={"name"}),
            num_classes=cell.dataset.num_classes,
            ghost_size=cell.training.ghost_batch_size,
        )
    model = model.to(device)
    if execution.channels_last:
        # Module.to accepts memory_format at run time; its type stubs do not say so.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    indices: torch.Tensor,
    micro: int,
    generator: torch.Generator,
    precision: str,
) -> torch.Tensor:
    """One optimizer update on the examples `indices`, as micro-batches of at most `micro`.

    Each micro-batch's loss is its summed cross-entropy over the whole batch size, so the
    accumulated gradient is the mean over all B examples: with ghost batch norm (statistics per
    slice of `ghost` examples) this is the big batch's update exactly. A data-parallel rank
    would take its slice of `indices` here. Returns the batch's mean loss, on the device.
    """
    device = indices.device
    optimizer.zero_grad(set_to_none=True)
    total = indices.numel()
    loss_sum = torch.zeros((), device=device)
    images, labels = data.train_images(indices, generator)  # uint8: 3 KB per image
    for x_u8, y in zip(images.split(micro), labels.split(micro)):
        x = data.normalize(x_u8)
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(_at_least_fp32(logits), y, reduction="sum") / total
        loss.backward()
        loss_sum += loss.detach()
    optimizer.step()
    return loss_sum


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    cell: Cell,
    epoch: int,
    phase: Phase,
    execution: ExecutionSpec,
) -> tuple[float, int]:
    """Train one epoch; returns (mean training loss over its steps, steps taken)."""
    device = data.device
    order = torch.Generator().manual_seed(stream_seed(cell.seed, "order", epoch))
    permutation = torch.randperm(data.n_train, generator=order).to(device)
    augment = torch.Generator(device=device).manual_seed(stream_seed(cell.seed, "augment", epoch))
    batch = phase.batch_size
    steps = updates_per_epoch(data.n_train, batch, cell.training.drop_last)
    micro = micro_batch_size(batch, execution, cell.training.ghost_batch_size)
    model.train()
    losses = torch.zeros((), device=device)
    for step in range(steps):
        indices = permutation[step * batch : (step + 1) * batch]
        losses += train_step(
            model, optimizer, data, indices, micro, augment, cell.training.precision
        )
    # The one host sync of the epoch: reading the loss.
    return float(losses) / steps, steps


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: DeviceData, batch_size: int, precision: str
) -> tuple[float, float]:
    """(mean test cross-entropy, test accuracy as a fraction), with running BN statistics."""
    model.eval()
    device = data.device
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for x, y in data.test_batches(batch_size):
        with autocast(device, precision):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
    n = data.n_test
    return float(loss) / n, int(correct) / n


def warm_up(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    cell: Cell,
    execution: ExecutionSpec,
) -> float:
    """Run every micro-batch shape of the plan once, untimed, then restore the weights.

    Compilation and cuDNN autotuning happen on the first call of each shape; without this they
    would land in the first epoch of each phase. Returns the seconds spent.
    """
    device = data.device
    start = time.perf_counter()
    base = getattr(model, "_orig_mod", model)  # the module under torch.compile's wrapper
    saved_model = {k: v.clone() for k, v in base.state_dict().items()}
    shapes = sorted(
        {
            micro_batch_size(p.batch_size, execution, cell.training.ghost_batch_size)
            for p in cell.plan.phases
        }
    )
    generator = torch.Generator(device=device).manual_seed(0)
    model.train()
    for micro in shapes:
        indices = torch.arange(min(micro, data.n_train), device=device)
        x, y = data.train_batch(indices, generator)
        with autocast(device, cell.training.precision):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
    optimizer.zero_grad(set_to_none=True)
    evaluate(model, data, execution.eval_batch_size, cell.training.precision)
    base.load_state_dict(saved_model)
    synchronize(device)
    return time.perf_counter() - start


def peak_memory(device: torch.device) -> int:
    """Peak device memory of this process; on the CPU the host's max resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def save_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress
) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": asdict(progress),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> Progress | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("version") != CHECKPOINT_VERSION:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return Progress(**state["progress"])


@contextlib.contextmanager
def _oom_fails_cell(cell: Cell, progress: Progress) -> Iterator[None]:
    """An out-of-memory error ends the cell as `failed`, naming the cure; the suite goes on."""
    try:
        yield
    except torch.OutOfMemoryError:
        progress.status = "failed"
        progress.error = (
            f"cell {cell.cell_id} ({cell.label}) ran out of device memory; lower "
            "execution.max_micro_batch in the suite or pass --max-micro-batch (a multiple "
            f"of the ghost batch size {cell.training.ghost_batch_size})"
        )


def train_cell(
    cell: Cell,
    data: DeviceData,
    execution: ExecutionSpec,
    checkpoint: Path,
    on_epoch: EpochCallback | None = None,
) -> CellResult:
    """Train `cell` to the end of its plan (or until its loss diverges), resuming if possible."""
    device = data.device
    segment_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True
    base_model = build(cell, device, execution)
    optimizer = build_optimizer(
        base_model.parameters(), cell.optimizer, cell.training.weight_decay, device
    )
    progress = load_checkpoint(checkpoint, base_model, optimizer, device) or Progress()
    model: torch.nn.Module = base_model
    if execution.compile:
        # One graph per micro-batch shape; a plan has at most a few of them.
        model = torch.compile(base_model, dynamic=False)  # type: ignore[assignment]

    with _oom_fails_cell(cell, progress):
        if execution.compile or device.type == "cuda":
            progress.warmup_time_s += warm_up(model, optimizer, data, cell, execution)
        for epoch in range(progress.epoch, cell.plan.epochs):
            phase = cell.plan.phase_at(epoch)
            set_hyperparameters(optimizer, phase.lr, phase.momentum)
            synchronize(device)
            start = time.perf_counter()
            train_loss, steps = train_epoch(model, optimizer, data, cell, epoch, phase, execution)
            synchronize(device)
            train_s = time.perf_counter() - start
            progress.updates += steps
            progress.images += min(steps * phase.batch_size, data.n_train)
            progress.train_time_s += train_s

            last = epoch + 1 == cell.plan.epochs
            diverged = not math.isfinite(train_loss)
            test_loss = test_acc = math.nan
            eval_s = 0.0
            if not diverged and (last or (epoch + 1) % cell.training.eval_every == 0):
                start = time.perf_counter()
                test_loss, test_acc = evaluate(
                    model, data, execution.eval_batch_size, cell.training.precision
                )
                synchronize(device)
                eval_s = time.perf_counter() - start
                progress.eval_time_s += eval_s
            row = {
                "suite": cell.suite,
                "cell_id": cell.cell_id,
                "epoch": epoch + 1,
                "updates": progress.updates,
                "lr": phase.lr,
                "batch_size": phase.batch_size,
                "momentum": phase.momentum,
                "noise_scale": phase.noise_scale,
                "train_loss": train_loss,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "epoch_time_s": train_s,
                "eval_time_s": eval_s,
                "images_per_s": steps * phase.batch_size / train_s if train_s > 0 else math.nan,
            }
            progress.curves.append(row)
            progress.epoch = epoch + 1
            if diverged:
                progress.status = "diverged"
                progress.error = f"training loss is {train_loss} in epoch {epoch + 1}"
                break
            progress.wall_clock_s += time.perf_counter() - segment_start
            segment_start = time.perf_counter()
            save_checkpoint(checkpoint, base_model, optimizer, progress)
            if on_epoch is not None:
                on_epoch(cell, row)
    progress.wall_clock_s += time.perf_counter() - segment_start
    return CellResult(progress, peak_memory(device))
