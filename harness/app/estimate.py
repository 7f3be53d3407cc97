"""`harness plan --estimate`: the device-seconds each cell will take, from measured step times.

For each cell: the images it trains on, its optimizer steps, and the seconds they take on a
device whose `harness bench` rows are at hand (`bench_folder`: the user's runs/bench, else
the project's results/bench): per phase, updates
x t(B), t the bench's median step time at that batch size where B was measured, otherwise the
least-squares line t(B) = a + b B through the device's measured sizes (a: the per-step cost
that does not grow with the batch, kernel launches above all; b: seconds per image once the
device is busy). Each epoch's test evaluation is added as n_test x b / 3 (a forward is about a
third of a training step's work), plus the training-loss images when `eval_train_loss` is on.

For K workers sharing the device (--per-device K) the estimate is a range: at best the cells'
launch gaps overlap perfectly, so the run takes the larger of the longest worker's queue (the
longest-processing-time assignment, the order `--order most-updates` claims in) and the whole
suite's images at b seconds each (the device saturated); at worst the workers only take turns,
and it is the one-worker total. Where no row fits, the error says which bench to run.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.suite import Cell
from harness.errors import UserError, printable
from harness.fsio import read_bytes, shown
from harness.results.paths import default_folder

# The models `harness bench` times, by name: (registry name, parameters).
BENCH_MODELS: dict[str, tuple[str, dict[str, int]]] = {
    "wrn16_4": ("wrn", {"depth": 16, "width": 4}),
    "small_cnn": ("small_cnn", {"width": 16}),
}


class BenchRowWarning(UserWarning):
    """Bench rows left out of an estimate (shown by the CLI as one line)."""


FORWARD_SHARE = 1 / 3  # an evaluation image's cost, as a share of a training image's
ASSUMED_TEST_IMAGES = 10_000  # where the suite does not say and the dataset's count is unknown


@dataclass(frozen=True)
class StepModel:
    """Measured step times of one (device, model, precision, mode), and the line through them."""

    measured: dict[int, float]  # batch size -> median seconds per optimizer step
    fixed_s: float  # a: seconds per step whatever the batch
    per_image_s: float  # b: seconds per image

    def step_s(self, batch: int) -> float:
        if batch in self.measured:
            return self.measured[batch]
        return self.fixed_s + self.per_image_s * batch

    @classmethod
    def fit(cls, measured: dict[int, float]) -> StepModel:
        """Least squares t = a + b B, with a and b kept >= 0; one size: t proportional to B."""
        sizes = sorted(measured)
        if len(sizes) == 1:
            return cls(measured, 0.0, measured[sizes[0]] / sizes[0])
        mean_b = sum(sizes) / len(sizes)
        mean_t = sum(measured[b] for b in sizes) / len(sizes)
        var = sum((b - mean_b) ** 2 for b in sizes)
        slope = sum((b - mean_b) * (measured[b] - mean_t) for b in sizes) / var
        slope = max(slope, 0.0)
        fixed = mean_t - slope * mean_b
        if fixed < 0:  # through the origin instead
            fixed = 0.0
            slope = sum(b * measured[b] for b in sizes) / sum(b * b for b in sizes)
        return cls(measured, fixed, slope)


@dataclass(frozen=True)
class CellEstimate:
    cell: Cell
    images: int
    steps: int
    seconds: float


def bench_name(cell: Cell) -> str | None:
    """The bench's name of the cell's model, or None when `harness bench` does not time it."""
    spec = cell.model.model_dump()
    if "factory" in spec:  # `harness bench --model pkg.module:build` names it as the suite does
        return None if spec.get("kwargs") else str(spec["factory"])
    for name, (registry, params) in BENCH_MODELS.items():
        if spec.get("name") == registry and all(spec.get(k) == v for k, v in params.items()):
            return name
    return None


def step_mode(cell: Cell) -> str:
    """The bench mode that times the step this cell's execution runs."""
    execution = cell.execution
    if not execution.compile:
        return "eager"
    return "captured" if execution.graphs else "compile"


COMMITTED_BENCH = Path("results/bench")  # the project's measured devices, tracked by git


def bench_folder(given: Path | None) -> Path:
    """The folder `--bench` names; by default the user's own rows (runs/bench, where `harness
    bench` writes) where there are any, else the project's committed ones."""
    if given is not None:
        return given
    mine = default_folder("bench")
    return mine if any(mine.glob("*.parquet")) else COMMITTED_BENCH


def load_rows(folder: Path) -> Any:
    import pandas as pd

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise UserError(
            f"--bench {folder}: no bench rows there; run `harness bench --device cuda` on the "
            "device first, or point --bench at a folder of its rows"
        )
    frame = pd.concat(
        [_bench_file(f, folder).assign(file=f.name) for f in files], ignore_index=True
    )
    if "mode" not in frame:  # rows from before --modes: the compile flag said it
        frame["mode"] = None
    compiled = frame["compile"].fillna(False).astype(bool)
    frame["mode"] = frame["mode"].fillna(compiled.map({True: "compile", False: "eager"}))
    return _measured(frame[frame["impl"] == "harness"], folder)


def _measured(rows: Any, folder: Path) -> Any:
    """The rows that are measurements: a step time that is a positive, finite number of seconds
    at a positive whole batch size. Others (NaN, -1, inf: a failed or forged bench) are left out
    with a warning naming their files, never turned into "nan s" or "-28 s"."""
    import numpy as np
    import pandas as pd

    step = pd.to_numeric(rows["step_time_s"], errors="coerce").to_numpy(dtype=float)
    batch = pd.to_numeric(rows["batch_size"], errors="coerce").to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(step) & (step > 0) & np.isfinite(batch) & (batch >= 1)
        good &= batch == np.round(batch)
    if not good.all():
        files = sorted(set(rows["file"][~good].astype(str)))
        warnings.warn(
            BenchRowWarning(
                f"--bench {folder}: {int((~good).sum())} row(s) left out, their step time not a "
                f"positive number of seconds (or batch size not a positive whole number): "
                f"{', '.join(files[:3])}{' ...' if len(files) > 3 else ''}"
            ),
            stacklevel=3,
        )
    return rows[good]


MAX_BENCH_FILE_BYTES = 64 << 20


def _bench_file(path: Path, folder: Path) -> Any:
    """One file of bench rows, through the one reader of a results folder's files (no link,
    FIFO, device or oversize file: harness.fsio.read_bytes)."""
    import io

    import pandas as pd
    import pyarrow as pa

    try:
        data = read_bytes(path, inside=folder, limit=MAX_BENCH_FILE_BYTES)
        return pd.read_parquet(io.BytesIO(data))
    except (OSError, pa.ArrowException) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"--bench {folder}: {shown(path)} is no readable bench file ({why}); remove it or "
            "point --bench at a folder of `harness bench` rows"
        ) from None


def pick_device(rows: Any, device_name: str | None, folder: Path) -> str:
    names = sorted(set(rows["device_name"].dropna()))
    if device_name is not None:
        names = [n for n in names if device_name.lower() in n.lower()]
        if not names:
            have = ", ".join(sorted(set(rows["device_name"].dropna()))) or "none"
            raise UserError(
                f"--device-name {device_name}: no bench rows of such a device in {folder} "
                f"(devices there: {have})"
            )
    if len(names) > 1:
        raise UserError(
            f"--bench {folder}: rows of several devices ({'; '.join(names)}); choose one with "
            "--device-name"
        )
    return names[0]


def step_model(rows: Any, device: str, model: str, precision: str, mode: str) -> StepModel | None:
    mine = rows[
        (rows["device_name"] == device)
        & (rows["model"] == model)
        & (rows["precision"] == precision)
        & (rows["mode"] == mode)
    ]
    if mine.empty:
        return None
    latest = mine.sort_values("measured_at").groupby("batch_size").tail(1)
    measured = {int(b): float(t) for b, t in zip(latest["batch_size"], latest["step_time_s"])}
    return StepModel.fit(measured)


def evaluated_images(cell: Cell) -> tuple[int, int]:
    """(evaluations, images each evaluation forwards) of a cell: every `eval_every` epochs and
    the last; the test images (the suite's `test_size`, else the dataset's known count, else
    ASSUMED_TEST_IMAGES for a folder or file counted only when it loads), plus the training-loss
    images when `eval_train_loss` is on."""
    plan, execution = cell.plan, cell.execution
    test = cell.dataset.test_size or cell.dataset.kind.test_size or ASSUMED_TEST_IMAGES
    limit = execution.train_loss_images
    train = plan.train_size if limit is None else min(limit, plan.train_size)
    every = max(1, cell.training.eval_every)
    evaluations = math.ceil(plan.epochs / every)  # the last epoch evaluates whatever `every`
    return evaluations, test + (train if execution.eval_train_loss else 0)


def estimate_cell(cell: Cell, model: StepModel) -> CellEstimate:
    plan = cell.plan
    seconds = sum(p.updates * model.step_s(p.batch_size) for p in plan.phases)
    evaluations, evaluated = evaluated_images(cell)
    seconds += evaluations * evaluated * model.per_image_s * FORWARD_SHARE
    images = sum(p.updates * p.batch_size for p in plan.phases)
    return CellEstimate(cell, images, plan.updates, seconds)


def makespan(seconds: Sequence[float], workers: int) -> float:
    """The longest worker's total when each next-longest cell goes to the least-loaded worker."""
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + s)
    return max(loads)


def estimate(
    cells: Sequence[Cell], bench: Path, device_name: str | None, workers: int
) -> tuple[str, list[CellEstimate | tuple[Cell, str]], dict[str, float]]:
    """(device, per cell an estimate or why there is none, totals)."""
    if workers < 1:
        raise UserError(f"--per-device {workers}: must be at least 1")
    rows = load_rows(bench)
    device = pick_device(rows, device_name, bench)
    out: list[CellEstimate | tuple[Cell, str]] = []
    floor = 0.0
    for cell in cells:
        name = bench_name(cell)
        mode = step_mode(cell)
        precision = cell.training.precision
        fitted = None if name is None else step_model(rows, device, name, precision, mode)
        if fitted is None:
            if name is None:
                why = (
                    f"`harness bench` does not time model {cell.model_name} (it times "
                    f"{', '.join(BENCH_MODELS)}, and a factory: model without kwargs)"
                )
            else:
                why = (
                    f"no bench rows of {name} {precision} {mode} on {device}: run `harness "
                    f"bench --model {name} --precision {precision} --modes {mode}` there"
                )
            out.append((cell, why))
            continue
        est = estimate_cell(cell, fitted)
        out.append(est)
        floor += est.images * fitted.per_image_s
    known = [e.seconds for e in out if isinstance(e, CellEstimate)]
    serial = sum(known)
    # Never above the serial sum: the floor prices every image at the fitted line's slope,
    # and a measured step time may lie below that line (a noisy bench), while workers that
    # gain nothing can still run the cells one after another.
    best = min(serial, max(makespan(known, workers), floor)) if known else 0.0
    totals = {"serial_s": serial, "workers": float(workers), "best_s": best}
    return device, out, totals


def print_estimate(
    cells: Sequence[Cell], bench: Path | None, device_name: str | None, workers: int
) -> None:
    """The table of the cells with an estimate and its totals; each distinct reason there is
    none once, with the cells it holds for; "no estimate" where no cell has one."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def plain(text: str) -> Text:  # never markup; the device name is the bench rows' text
        return Text(printable(text))

    bench = bench_folder(bench)
    device, estimates, totals = estimate(cells, bench, device_name, workers)
    console = Console()
    known = [e for e in estimates if isinstance(e, CellEstimate)]
    missing: dict[str, list[str]] = {}
    for item in estimates:
        if not isinstance(item, CellEstimate):
            missing.setdefault(item[1], []).append(item[0].cell_id)
    if known:
        title = plain(f"estimate on {device} (bench rows in {bench})")
        table = Table(title=title, title_justify="left")
        for name in ("cell", "label", "mode", "images", "steps", "device-s", "min"):
            table.add_column(name, justify="left" if name in ("cell", "label", "mode") else "right")
        for item in known:
            c = item.cell
            table.add_row(
                c.cell_id, plain(c.label), step_mode(c), f"{item.images:.3g}", str(item.steps),
                f"{item.seconds:.0f}", f"{item.seconds / 60:.1f}",
            )  # fmt: skip
        serial, best = totals["serial_s"], totals["best_s"]
        k = int(totals["workers"])
        some = f" ({len(known)} of {len(estimates)} cells)" if missing else ""
        table.caption = (
            f"one worker: {serial:.0f} s ({serial / 60:.1f} min){some}"
            + (
                f"; {k} workers on the device: {best:.0f}-{serial:.0f} s ({best / 60:.1f}-"
                f"{serial / 60:.1f} min: launch gaps overlapped perfectly .. workers taking turns)"
                if k > 1
                else ""
            )
            + ". Step time per batch from the bench rows (exact where measured, else a + b B); "
            "evaluation n_test x b / 3 per epoch; warm-up and compile time not included"
            + (
                "; an adaptive cell is estimated at its upper bound (its batch never grows)"
                if any(c.decided is not None for c in cells)
                else ""
            )
        )
        table.caption_justify = "left"
        console.print(table)
    else:
        console.print(
            plain(
                f"no estimate on {device} (bench rows in {bench}) for any of the "
                f"{len(estimates)} cells"
            ),
            highlight=False,
        )
    for why, ids in missing.items():
        which = ids[0] if len(ids) == 1 else f"{len(ids)} cells ({_few(ids)})"
        console.print(plain(f"no estimate for {which}: {why}"), highlight=False)


def _few(ids: list[str], shown: int = 3) -> str:
    more = f", ... {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(ids[:shown]) + more
