"""`harness bench`: images/s of the harness's training step beside a plain PyTorch loop.

The timing itself lives in `harness.train.timing` (it runs the training layer's real step);
this module picks the data and models, adds provenance (device, versions, git commit) to every
measurement, prints the table and writes one Parquet row per measurement, so numbers taken on
different machines and commits can be put side by side later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tabulate import tabulate

from harness.app.device_policy import resolve_device
from harness.app.estimate import BENCH_MODELS
from harness.config.schema import DatasetSpec
from harness.core.datasets import DATASETS
from harness.core.execution import micro_batch_problem
from harness.core.factory_spec import FactoryRef, factory_problem
from harness.core.rules import MAX_BATCH_SIZE
from harness.data import registry
from harness.data.device import DeviceData
from harness.data.request import LoadRequest
from harness.errors import UserError
from harness.fsio import atomic_path
from harness.results.paths import default_folder
from harness.results.provenance import environment
from harness.train.timing import (
    BenchSetup,
    Measurement,
    interleave,
    prepare_harness,
    prepare_reference,
    ratios,
)

DEFAULT_GHOST = 128  # without --ghost: this, or its largest divisor that divides the batch
SYNTHETIC_TRAIN = 2048  # images in the synthetic bench set (random batches are drawn from it)
# The harness step's variants, each measured beside the plain loop in one process: eager, the
# inductor-compiled step, and the captured step (compile mode reduce-overhead: CUDA graphs).
STEP_MODES: dict[str, tuple[bool, str]] = {
    "eager": (False, "default"),
    "compile": (True, "default"),
    "captured": (True, "reduce-overhead"),
}


def bench_datasets() -> list[str]:
    """The dataset kinds `--data` may name: those held on the device that need nothing but
    their sizes (no file of the user's)."""
    return [kind.name for kind in DATASETS.values() if kind.storage == "device" and kind.sized_only]


def parse_modes(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    bad = [m for m in modes if m not in STEP_MODES]
    if not modes or bad:
        raise UserError(
            f"--modes {text!r}: give some of {', '.join(STEP_MODES)}, comma-separated "
            "(e.g. eager,captured)"
        )
    return list(dict.fromkeys(modes))


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes {text!r}: give integers separated by commas") from None
    if not sizes or any(b < 1 for b in sizes):
        raise UserError(f"--batch-sizes {text!r}: give positive integers, e.g. 128,512,5120")
    big = [b for b in sizes if b > MAX_BATCH_SIZE]
    if big:  # the bound a suite's batch sizes have
        raise UserError(
            f"--batch-sizes {text!r}: {big[0]} is over the largest batch size "
            f"{MAX_BATCH_SIZE:,}; give smaller sizes"
        )
    return sizes


@contextlib.contextmanager
def _fits_in_memory(batch: int, device: torch.device) -> Iterator[None]:
    """A batch whose images or activations the device cannot hold ends the bench with one line
    naming it (the CPU's allocator raises a RuntimeError, CUDA an OutOfMemoryError)."""
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if not isinstance(exc, torch.OutOfMemoryError) and not any(
            words in text for words in ("can't allocate memory", "out of memory")
        ):
            raise
        said = re.sub(r"^\[enforce fail[^\]]*\]\s*(err == 0\.\s*)?", "", text.strip())
        raise UserError(
            f"--batch-sizes: a batch of {batch} images does not fit in the memory of {device} "
            f"({said.splitlines()[0][:200]}); give smaller sizes, or --max-micro-batch for the "
            "step's activations"
        ) from None


def run_bench(
    *,
    device: str | None,
    model: str,
    batch_sizes: list[int],
    precision: str,
    compile_model: bool,
    steps: int,
    repeats: int,
    out: Path | None,
    data: str,
    data_root: Path | None,
    max_micro_batch: int | None,
    ghost: int | None,
    workers: int | None,
    modes: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure every batch size (the harness step in each of `modes` and the reference, timed
    round by round: `harness.train.timing.interleave`), print a table, write the rows.
    `compile_model` compiles the reference too and is the mode "compile" of the harness step;
    `modes` (default eager) may not be given with it. `ghost` None: `ghost_for` each batch."""
    if compile_model and modes is not None:
        raise UserError("--compile with --modes: give --modes compile (or captured) instead")
    modes = ["compile"] if compile_model else (modes or ["eager"])
    factory = None
    if model not in BENCH_MODELS:
        if ":" not in model or factory_problem(model) is not None:
            raise UserError(
                f"--model {model!r}: choose one of {', '.join(sorted(BENCH_MODELS))}, or your "
                "own model as pkg.module:build or file.py:build"
            )
        # The user's model, built as a suite's `factory:` is (relative paths from here).
        factory = FactoryRef.of(model, {}, str(Path.cwd()))
    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision {precision!r}: choose fp32 or bf16")
    if data not in bench_datasets():
        raise UserError(f"--data {data!r}: choose one of {', '.join(bench_datasets())}")
    if steps < 1 or repeats < 1:
        raise UserError("--steps and --repeats: must be at least 1")
    if ghost is not None and ghost < 1:
        raise UserError(f"--ghost {ghost}: give a positive integer, e.g. 128")
    for batch in batch_sizes:
        if ghost is not None and batch % ghost:
            raise UserError(
                f"--batch-sizes: {batch} is not a multiple of the ghost size {ghost}; "
                "leave --ghost out to derive one per batch size"
            )
    ghosts = {batch: ghost_for(batch, ghost) for batch in batch_sizes}
    if max_micro_batch is not None:
        why = micro_batch_problem(max_micro_batch, sorted(set(ghosts.values())))
        if why is not None:
            raise UserError(f"--max-micro-batch {max_micro_batch}: {why}")
    torch_device = resolve_device(device)
    # All of a dataset's training images (a synthetic one: SYNTHETIC_TRAIN), 16 test images.
    sized = DATASETS[data].train_size is not None
    spec = DatasetSpec(name=data, train_size=None if sized else SYNTHETIC_TRAIN, test_size=16)
    arrays = registry.read(LoadRequest(spec, data_root, torch_device)).arrays
    device_data = DeviceData.from_arrays(arrays, torch_device)
    images = torch.from_numpy(arrays.train_x)
    labels = torch.from_numpy(arrays.train_y.astype("int64"))
    if workers is None:
        workers = 0 if torch_device.type == "cpu" else min(8, os.cpu_count() or 1)
    name, params = BENCH_MODELS.get(model, ("factory", {}))
    env = environment(torch_device)
    env["cuda_version"] = torch.version.cuda
    stamp = dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        setup = BenchSetup(
            model=name,
            model_params=params,
            batch_size=batch,
            ghost_size=ghosts[batch],
            precision=precision,
            compile=compile_model,
            max_micro_batch=max_micro_batch,
            steps=steps,
            repeats=repeats,
            workers=workers,
            factory=factory,
        )
        prepared = []
        with _fits_in_memory(batch, torch_device):
            for mode in modes:
                compiled, compile_mode = STEP_MODES[mode]
                variant = replace(setup, compile=compiled, compile_mode=compile_mode)
                prepared.append(prepare_harness(variant, device_data))
            prepared.append(
                prepare_reference(
                    setup, images, labels, device_data.mean, device_data.std, torch_device
                )
            )
            timed = interleave(prepared, torch_device, repeats)
        reference = timed[-1]
        measured = [*zip(modes, timed[:-1], strict=True)]
        measured.append(("compile" if compile_model else "eager", reference))
        eager = next((m for mode, m in measured if mode == "eager" and m.impl == "harness"), None)
        for mode, m in measured:
            low, high = m.images_per_s_range
            harness_row = m.impl == "harness"
            to_ref = ratios(m, reference)
            to_eager = _ratios_or_none(m, eager if harness_row else None)
            rows.append(
                {
                    "measured_at": stamp,
                    "impl": m.impl,
                    "mode": mode,
                    "model": model,
                    "batch_size": batch,
                    "micro_batch": m.micro_batch,
                    "ghost_size": ghosts[batch],
                    "precision": precision,
                    "compile": STEP_MODES[mode][0],
                    "compile_mode": STEP_MODES[mode][1],
                    "data": data,
                    "steps": steps,
                    "repeats": repeats,
                    "images_per_s": m.images_per_s,
                    "images_per_s_min": low,
                    "images_per_s_max": high,
                    "step_time_s": m.step_time_s,
                    "warmup_s": m.warmup_s,
                    "peak_memory_bytes": m.peak_memory_bytes,
                    "syncs_per_step": m.syncs_per_step,
                    "cudagraph_skips": m.cudagraph_skips,
                    # Medians of the per-round ratios (interleaved), with their min and max.
                    "ratio_to_reference": to_ref[1],
                    "ratio_to_reference_min": to_ref[0],
                    "ratio_to_reference_max": to_ref[2],
                    # The same process's eager harness step: what compiling / capturing buys.
                    "ratio_to_eager": to_eager[1],
                    "ratio_to_eager_min": to_eager[0],
                    "ratio_to_eager_max": to_eager[2],
                    "interleaved": True,
                    "reference_workers": workers,
                    **env,
                }
            )
    print_table(rows)
    frame = pd.DataFrame(rows)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)  # a factory string holds ':' and '/'
    out = out or default_folder("bench")  # the user's own; the project's are in results/bench
    path = out / f"bench-{safe}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.parquet"
    try:
        with atomic_path(path, inside=out) as tmp:  # a shared folder: no link followed
            frame.to_parquet(tmp, index=False)
    except OSError as exc:
        raise UserError(f"{out}: cannot write bench rows ({exc.strerror or exc})") from None
    print(f"wrote {path}")
    return rows


def ghost_for(batch: int, ghost: int | None) -> int:
    """The ghost size a bench of `batch` uses: `ghost` when given, else `DEFAULT_GHOST` or,
    where that does not divide the batch, their greatest common divisor (32 at B = 32)."""
    return ghost if ghost is not None else math.gcd(batch, DEFAULT_GHOST)


def _ratios_or_none(
    m: Measurement, other: Measurement | None
) -> tuple[float | None, float | None, float | None]:
    return (None, None, None) if other is None else ratios(m, other)


def _ratio(r: dict[str, Any], name: str) -> str:
    if r[name] is None:
        return "-"
    return f"{r[name]:.2f} ({r[name + '_min']:.2f}-{r[name + '_max']:.2f})"


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def print_table(rows: list[dict[str, Any]]) -> None:
    table = [
        [
            r["model"],
            r["batch_size"],
            r["micro_batch"],
            r["impl"]
            if r["impl"] == "reference" and r["mode"] == "eager"
            else f"{r['impl']} {r['mode']}",
            f"{r['images_per_s']:.0f} ({r['images_per_s_min']:.0f}-{r['images_per_s_max']:.0f})",
            _num(r["step_time_s"] * 1000, ".1f"),
            _ratio(r, "ratio_to_reference") if r["impl"] == "harness" else "",
            _ratio(r, "ratio_to_eager") if r["impl"] == "harness" else "",
            _num(r["warmup_s"], ".1f"),
            _num(r["peak_memory_bytes"] and r["peak_memory_bytes"] / 2**20, ".0f"),
            _num(r["syncs_per_step"], ".0f"),
        ]
        for r in rows
    ]
    headers = [
        "model",
        "B",
        "micro",
        "impl",
        "images/s median (min-max)",
        "step ms",
        "harness/ref median (min-max)",
        "/eager median (min-max)",
        "warm-up+compile s",
        "peak MiB",
        "syncs/step",
    ]
    device = rows[0]["device_name"] if rows else ""
    print(f"{device}; torch {rows[0]['torch_version'] if rows else ''}")
    print(tabulate(table, headers=headers, tablefmt="github"))
