"""Time train_step with and without the noise meter (the overhead docs/noise.md refers to).

    OMP_NUM_THREADS=1 python scripts/noise_overhead.py [--batch 128] [--steps 30] [--repeats 5]

Configurations, interleaved per repeat so that a change in the machine's load hits each:
whole (one micro-batch, no meter), split (two micro-batches, no meter), split+meter (two
micro-batches, meter on: the meter's own cost is split+meter - split) and, the cost of
execution.noise_scale on a step that would run whole, split+meter - whole. Synthetic
CIFAR-shaped data, small_cnn width 16, ghost 16, momentum SGD, one warm-up step per config.
Prints the median ms/step of each and the machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.models.registry import build_model
from harness.train.noise import NoiseMeter
from harness.train.optim import build_optimizer
from harness.train.spec import OptimizerConfig
from harness.train.step import train_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cpu")
    data = DeviceData.from_arrays(synthetic_cifar10(4096, 64, seed=0), device)
    torch.manual_seed(0)
    model = build_model("small_cnn", {"width": 16}, num_classes=10, ghost_size=16)
    optim = build_optimizer(
        model.parameters(), OptimizerConfig("momentum", 0.01, momentum=0.9), device
    )
    meter = NoiseMeter(model.parameters(), data.n_train)
    b = args.batch
    configs = {"whole": (b, None), "split": (b // 2, None), "split+meter": (b // 2, meter)}
    gen = torch.Generator().manual_seed(0)
    model.train()

    def run(micro: int, m: NoiseMeter | None, steps: int) -> float:
        start = time.perf_counter()
        for s in range(steps):
            idx = torch.arange(s * b, (s + 1) * b) % data.n_train
            train_step(model, optim, data, idx, micro, gen, "fp32", meter=m)
        return (time.perf_counter() - start) / steps * 1000

    for micro, m in configs.values():
        run(micro, m, 1)
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):
        for name, (micro, m) in configs.items():
            times[name].append(run(micro, m, args.steps))
    meter.end_epoch()
    # The meter's own work per step, timed alone on the model's real gradients (a step of two
    # micro-batches: two after_backward calls), much less exposed to the machine's load than
    # the difference of two whole-step timings.
    half = b // 2
    train_step(model, optim, data, torch.arange(b), half, gen, "fp32")  # .grad populated
    alone = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(200):
            meter.after_backward(half, b)
            meter.after_backward(half, b)
        alone.append((time.perf_counter() - start) / 200 * 1000)
    meter.end_epoch()
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); B={b}, {args.steps} steps x {args.repeats}"
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    for name, v in times.items():
        print(
            f"{name:12s} median {med[name]:8.2f} ms/step  runs " + " ".join(f"{x:.1f}" for x in v)
        )
    print(
        f"meter alone (split+meter vs split): {100 * (med['split+meter'] / med['split'] - 1):+.2f}%"
    )
    print(
        f"noise_scale on a whole step (split+meter vs whole): "
        f"{100 * (med['split+meter'] / med['whole'] - 1):+.2f}%"
    )
    print("fastest runs: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()) + " ms/step")
    print(
        f"meter's own work alone: median {statistics.median(alone):.3f} ms/step "
        f"(runs {' '.join(f'{x:.3f}' for x in alone)}), "
        f"{100 * statistics.median(alone) / best['split']:.2f}% of the fastest split step"
    )


if __name__ == "__main__":
    main()
