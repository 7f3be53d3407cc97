"""Data-parallel overhead on this machine: one cell at the same global batch, trained by one
process and by N torchrun processes (gloo on the CPU, NCCL on GPUs), timed by the rows' own
train_time_s (clocks read after a synchronize and a barrier; warm-up and evaluation apart).

    python scripts/bench_ddp.py [--procs 2] [--repeats 3] [--device cpu]

Prints a markdown table: images/s of each run, and per repeat (runs alternate, so drift
in the machine's load hits all alike) the N-process / 1-process ratio, and the scaling
efficiency: N-process images/s over N x a single process given one process's share of the
machine (cores / N threads on the CPU). 1 - efficiency is the data-parallel overhead (the
all-reduces, the barrier, each process drawing the whole step's augmentation).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

SUITE = """\
name: ddp-bench
dataset: {{name: synthetic, train_size: {n}, test_size: 256}}
models: {{cnn: {{name: small_cnn, width: 32}}}}
optimizers: {{momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}}}
schedule: {{epochs: {epochs}, shape: step, milestones: [], batch_size: {batch}}}
schedules: {{constant: {{realization: lr}}}}
training: {{ghost_batch_size: 32, precision: fp32}}
execution: {{eval_batch_size: 256}}
experiments: [{{name: bench, optimizers: [momentum], schedules: [constant], seeds: [0]}}]
"""


def run(suite: Path, results: Path, procs: int, device: str, threads: int | None = None) -> float:
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // procs)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    head = [sys.executable, "-m", "harness"]
    if procs > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        head += [f"--nproc_per_node={procs}", "-m", "harness"]
    cmd = [*head, "run", str(suite), "--results", str(results), "--device", device, "--force"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    row = pd.read_parquet(results / "runs").iloc[0]
    return float(row["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "ddp-bench.yaml"
        suite.write_text(SUITE.format(n=args.train_size, epochs=args.epochs, batch=args.batch))
        rows = []
        for r in range(args.repeats):
            share = max(1, (os.cpu_count() or 1) // args.procs)
            one = run(suite, Path(tmp) / "one", 1, args.device)
            part = run(suite, Path(tmp) / "part", 1, args.device, threads=share)
            many = run(suite, Path(tmp) / "many", args.procs, args.device)
            rows.append((r, one, part, many, many / one, many / (args.procs * part)))
    n = args.procs
    print(
        f"| repeat | 1 process img/s | 1 process, 1/{n} of the cores | {n} processes img/s "
        f"| {n} / 1 | efficiency |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r, one, part, many, ratio, eff in rows:
        print(f"| {r} | {one:.0f} | {part:.0f} | {many:.0f} | {ratio:.3f} | {eff:.3f} |")
    for k, name in ((4, "ratio"), (5, "efficiency")):
        values = [row[k] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"median {name} {statistics.median(values):.3f} (std {spread:.3f})")
    print(
        f"{len(rows)} repeats; global batch {args.batch}, N={args.train_size}, "
        f"{args.epochs} epochs, device {args.device}, {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
