"""The allocator setting (harness.allocator) measured: one cell, both settings, round by round.

    python scripts/bench_allocator.py [--suite suites/cifar-cpu.yaml]
        [--only 'sec5.1-cpu/momentum/increasing_batch/seed0'] [--rounds 3] [--out FILE]

Each round trains the cell twice in fresh processes, HARNESS_MALLOC=tuned then =system (the
order alternates between rounds, so a drift of the machine's load falls on both), and checks
that the two runs' curves are bit-identical. It prints, and writes to --out as markdown, each
setting's wall clock, training and evaluation time per round, their min-median-max, the ratio
per round, the machine, the thread count and the load average before and after each run.
Nothing else should run meanwhile: a timing under load is no measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TIMES = ("wall_clock_s", "train_time_s", "eval_time_s")
CURVE = ["epoch", "lr", "batch_size", "train_loss", "test_loss", "test_acc"]


def _train(suite: str, only: str, malloc: str, folder: Path) -> tuple[dict[str, float], list]:
    env = {**os.environ, "HARNESS_MALLOC": malloc}
    cmd = [sys.executable, "-m", "harness", "run", suite, "--only", only,
           "--results", str(folder), "--device", "cpu"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, cwd=REPO, capture_output=True)
    (run,) = (folder / "runs").glob("*.parquet")
    (curve,) = (folder / "curves").glob("*.parquet")
    row = pq.read_table(run).to_pylist()[0]
    assert row["allocator"] == {"tuned": "glibc tuned", "system": "glibc default"}[malloc]
    return {k: float(row[k]) for k in TIMES}, pq.read_table(curve, columns=CURVE).to_pylist()


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="suites/cifar-cpu.yaml")
    parser.add_argument("--only", default="sec5.1-cpu/momentum/increasing_batch/seed0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    times: dict[str, list[dict[str, float]]] = {"tuned": [], "system": []}
    loads: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            order = ("tuned", "system") if r % 2 == 0 else ("system", "tuned")
            curves = {}
            for malloc in order:
                before = os.getloadavg()[0]
                t, curves[malloc] = _train(
                    args.suite, args.only, malloc, Path(scratch) / f"{r}{malloc}"
                )
                times[malloc].append(t)
                loads.append(f"{before:.2f} -> {os.getloadavg()[0]:.2f}")
            if curves["tuned"] != curves["system"]:
                print("the two settings' curves differ: not a pure timing change", file=sys.stderr)
                return 1
    threads = os.environ.get("OMP_NUM_THREADS", f"all {os.cpu_count()}")
    lines = [
        f"# glibc allocator: HARNESS_MALLOC=tuned vs system ({args.rounds} rounds)",
        "",
        f"Cell `{args.only}` of `{args.suite}` on {platform.processor() or platform.machine()} "
        f"({threads} threads), Python {platform.python_version()}; curves bit-identical in "
        f"every round; load average before -> after each run: {', '.join(loads)}.",
        "",
        "| seconds (min / median / max) | tuned | system | system / tuned per round |",
        "| --- | --- | --- | --- |",
    ]
    for key in TIMES:
        tuned = [t[key] for t in times["tuned"]]
        system = [t[key] for t in times["system"]]
        ratios = ", ".join(f"{s / t:.2f}" for s, t in zip(system, tuned, strict=True))
        lines.append(f"| {key} | {_spread(tuned)} | {_spread(system)} | {ratios} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
