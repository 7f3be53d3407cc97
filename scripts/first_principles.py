"""A suite's device time from first principles, where no bench rows of the device exist yet.

    PYTHONPATH=. python scripts/first_principles.py suites/cifar.yaml [--only sec5.2] \
        [--tflops 790] [--mfu 0.35] [--launch-us 8] [--graph-gap-us 1.5] [--workers 4]

Counted here, on the CPU, with the harness's own step (nothing timed):
  * FLOPs per training image: torch.utils.flop_counter over one forward + backward of the
    cell's model at its ghost batch (the matmuls and convolutions; elementwise work is not
    counted, it is memory-bound and rides on the launch term below);
  * kernels per micro-batch: the aten ops one eager forward + backward dispatches (views,
    which launch nothing, left out) at the cell's precision (bf16's autocast adds its casts),
    and per optimizer step those of the cell's optimizer update.
Assumed (the flags, each printed with the result):
  * --tflops: the device's dense bf16 peak; --mfu: the share of it convolutions this small
    reach; a step's compute is images x FLOPs / (tflops x mfu);
  * --graph-gap-us: the device's own gap between two kernels (a replayed CUDA graph's), so the
    device is busy for compute + kernels x gap per step: a captured step's time;
    --launch-us: host time per eager kernel launch (Python, dispatcher, CUDA launch), so an
    eager step takes max(busy, kernels x launch);
  * each evaluation (every eval_every epochs and the last): the test images' forwards (and the
    training loss's), a third of a training image's FLOPs each (harness.app.estimate's count);
  * K workers on one device overlap each other's launch gaps but not their kernels: the run
    takes max(the longest worker's queue, the device busy with every cell).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from harness.app.estimate import FORWARD_SHARE, evaluated_images, makespan
from harness.app.jobs import train_job
from harness.config.suite import load_suite, select_some
from harness.core.execution import Execution
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.data.source import StepBatch
from harness.train.loop import build
from harness.train.optim import build_optimizer
from harness.train.step import step_micro_batch, train_on

VIEWS = {
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "as_strided",
    "detach", "alias", "unsqueeze", "squeeze", "slice", "select", "split", "unbind",
    "_reshape_alias", "split_with_sizes", "lift_fresh",
}  # fmt: skip


class KernelCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket.__name__ not in VIEWS:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def measure(job, ghost: int, precision: str) -> tuple[float, int, int]:
    """(FLOPs per training image, kernels per micro-batch, kernels of the update)."""
    data = DeviceData.from_arrays(synthetic_cifar10(2 * ghost, 16, seed=0), torch.device("cpu"))
    model = build(job, data.device, Execution())
    optimizer = build_optimizer(model.parameters(), job.optimizer, data.device)
    images, labels = data.train_images(torch.arange(ghost), torch.Generator().manual_seed(0))
    step = StepBatch.split(images, labels, ghost)
    model.train()
    train_on(model, optimizer, data, step, precision)  # the optimizer's state exists from here
    with FlopCounterMode(display=False) as flops:
        train_on(model, optimizer, data, step, precision)
    counter = KernelCounter()
    with counter:
        train_on(model, optimizer, data, step, precision)
    update = KernelCounter()
    with update:
        optimizer.step()
    return flops.get_total_flops() / ghost, counter.kernels - update.kernels, update.kernels


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--only", default=None)
    parser.add_argument("--tflops", type=float, default=790.0)
    parser.add_argument("--mfu", type=float, default=0.35)
    parser.add_argument("--launch-us", type=float, default=8.0)
    parser.add_argument("--graph-gap-us", type=float, default=1.5)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    cells = select_some(suite, args.only)
    rate = args.tflops * 1e12 * args.mfu
    measured: dict[str, tuple[float, int, int]] = {}
    rows = []
    for cell in cells:
        # The model, its optimizer (the update's kernels) and the precision (autocast's casts)
        # set the counts; the ghost size sets the micro-batch they are counted at.
        ghost = cell.training.ghost_batch_size
        precision = cell.training.precision
        key = (cell.model.model_dump_json(), cell.optimizer.kind, precision, ghost)
        job = train_job(cell)
        if key not in measured:
            measured[key] = measure(job, ghost, precision)
        flops, kernels, update = measured[key]
        eager = captured = 0.0
        images = 0
        for p in cell.plan.phases:
            micro = step_micro_batch(p.batch_size, cell.execution, ghost)
            launches = kernels * (p.batch_size // micro) + update
            # The device's busy time: its kernels plus the gaps between them (a graph's, at
            # best); an eager step cannot be shorter than its host's launches either.
            busy = p.batch_size * flops / rate + launches * args.graph_gap_us * 1e-6
            eager += p.updates * max(busy, launches * args.launch_us * 1e-6)
            captured += p.updates * busy
            images += p.updates * p.batch_size
        # Each evaluation: its images' forwards, a third of a training image's FLOPs each.
        evaluations, evaluated = evaluated_images(cell)
        evaluation = evaluations * evaluated * flops * FORWARD_SHARE / rate
        # A captured cell's time is the device's busy time: the floor of any sharing.
        rows.append((cell, images, eager + evaluation, captured + evaluation))
    flops, kernels, update = next(iter(measured.values()))
    print(
        f"{suite.name}: {len(cells)} cells; counted: {flops / 1e9:.2f} GFLOP per training image, "
        f"{kernels} kernels per micro-batch + {update} per update (first cell, "
        f"{rows[0][0].training.precision}); assumed: "
        f"{args.tflops:g} TFLOP/s x MFU {args.mfu:g}, eager launch {args.launch_us:g} us/kernel, "
        f"graph gap {args.graph_gap_us:g} us/kernel"
    )
    print(f"{'cell':12}  {'label':44} {'images':>9} {'steps':>6} {'eager s':>8} {'captured s':>10}")
    for cell, images, eager, captured in rows:
        print(
            f"{cell.cell_id:12}  {cell.label:44} {images:9.3g} {cell.plan.updates:6d} "
            f"{eager:8.0f} {captured:10.0f}"
        )
    for name, column in (("eager", 2), ("captured", 3)):
        times = [r[column] for r in rows]
        floor = sum(r[3] for r in rows)  # the device busy with every cell's kernels
        best = max(makespan(times, args.workers), floor)
        print(
            f"{name}: one worker {sum(times):.0f} s ({sum(times) / 60:.1f} min); "
            f"{args.workers} workers {best:.0f} s ({best / 60:.1f} min)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
