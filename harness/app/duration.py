"""Before a suite trains: how long it will take on this device, said in one line when it is
days (`harness run` goes on; the line only saves a user from waiting blind).

Two sources, the better first: the `harness bench` rows of this very device (`plan --estimate`'s
count, `app.estimate`) for the cells they cover; for the rest a first-principles count, the
FLOPs of one forward pass per image (torch's FlopCounterMode over the model built on the meta
device, so nothing is computed) times three for a training step, times the images the plan
trains on, plus the evaluations' forwards, at an assumed rate per kind of device. The rates
are optimistic on purpose (a fast laptop CPU, a large GPU near its dense peak): the count is a
lower bound, and the line appears only when even that is long.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.app.estimate import (
    CellEstimate,
    bench_folder,
    estimate,
    evaluated_images,
    load_rows,
)
from harness.config.suite import Cell, DatasetSpec
from harness.errors import UserError

if TYPE_CHECKING:
    import torch

# Assumed FLOP/s a training step reaches, per torch device type (lower-bound durations).
ASSUMED_RATE = {"cpu": 2e11, "mps": 1e13, "cuda": 3e14}
TRAIN_SHARE = 3.0  # a training image's FLOPs: forward + backward, about three forwards
WARN_AFTER_S = 24 * 3600.0  # "days": say so
CIFAR_SIDE = 32


def long_suite_line(cells: Sequence[Cell], device: Any, device_name: str) -> str | None:
    """The warning line when the cells about to train take a day or more here, else None."""
    if not cells or os.environ.get("HARNESS_WORKER"):  # a fan-out's parent speaks for it
        return None
    seconds, how = suite_seconds(cells, device, device_name)
    if seconds is None or seconds < WARN_AFTER_S:
        return None
    return (
        f"warning: {len(cells)} cells to train here take about {_days(seconds)} on "
        f"{device_name} ({how}); going on. For a run of minutes try suites/smoke.yaml, or "
        "fewer cells with --only; `harness plan SUITE --estimate` counts per cell"
    )


def suite_seconds(cells: Sequence[Cell], device: Any, device_name: str) -> tuple[float | None, str]:
    """(seconds for `cells` on this device, how they were counted); None when they could not be."""
    rest = list(cells)
    total = 0.0
    hows = []
    try:
        bench = bench_folder(None)
        rows = load_rows(bench)
        if device_name in set(rows["device_name"].dropna()):
            _, estimates, _ = estimate(cells, bench, device_name, 1)
            known = [e for e in estimates if isinstance(e, CellEstimate)]
            total += sum(e.seconds for e in known)
            done = {e.cell.cell_id for e in known}
            rest = [c for c in cells if c.cell_id not in done]
            if known:
                hows.append(f"bench rows in {bench}")
    except (UserError, OSError, KeyError, ValueError):
        pass  # no usable rows: the count below covers every cell
    if rest:
        rate = ASSUMED_RATE.get(getattr(device, "type", "cpu"), ASSUMED_RATE["cpu"])
        counted = _counted_seconds(rest, rate)
        if counted is None:
            return (total, ", ".join(hows)) if hows else (None, "")
        total += counted
        hows.append(f"a FLOP count at an assumed {rate / 1e12:g} TFLOP/s, a lower bound")
    return total, "; ".join(hows)


def _counted_seconds(cells: Sequence[Cell], rate: float) -> float | None:
    flops: dict[str, float | None] = {}
    seconds = 0.0
    for cell in cells:
        key = f"{cell.model.model_dump_json()} {cell.dataset.model_dump_json()}"
        if key not in flops:
            flops[key] = forward_flops(cell)
        per_image = flops[key]
        if per_image is None:
            return None
        trained = sum(p.updates * p.batch_size for p in cell.plan.phases)
        evaluations, evaluated = evaluated_images(cell)
        work = per_image * (TRAIN_SHARE * trained + evaluations * evaluated)
        seconds += work / rate
    return seconds


def forward_flops(cell: Cell) -> float | None:
    """FLOPs of one image's forward pass through the cell's model (its matmuls and
    convolutions), counted on the meta device; None where the model cannot be built there."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.app.jobs import train_job
    from harness.models.registry import build_model, input_size

    job = train_job(cell)
    spec = cell.dataset
    side = spec.kind.image_side or CIFAR_SIDE  # an .npz says its side only when it loads
    if spec.kind.crops:
        side = spec.image_size or input_size(cell.model.name) or 224
    images = max(1, job.ghost_batch_size)
    try:
        with torch.device("meta"):
            model = build_model(
                job.model.name,
                dict(job.model.params),
                num_classes=job.num_classes,
                ghost_size=job.ghost_batch_size,
                factory=job.model.factory,
            )
            model.eval()  # the evaluation path: batch norm needs no autocast on meta
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(_example_input(spec, images, side))
    except Exception:  # advisory only: a model the meta device cannot run gets no line
        return None
    total = float(counter.get_total_flops())
    return total / images if total > 0 and math.isfinite(total) else None


def _example_input(spec: DatasetSpec, examples: int, side: int) -> torch.Tensor:
    """A batch of `examples` zero inputs: token ids (examples, block_size) for a sequence
    kind, else images (examples, 3, side, side)."""
    import torch

    if spec.kind.storage == "sequences" and spec.block_size is not None:
        return torch.zeros(examples, spec.block_size, dtype=torch.long)
    return torch.zeros(examples, 3, side, side)


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.0f} hours"
