"""`harness run`: every cell of a suite, skipping finished ones, resuming killed ones.

A cell is finished when its run row exists with status ok or diverged. A cell's failure is
the cell's, never the suite's: any error inside a cell (out of memory, an unreadable
checkpoint, a bug) becomes a `failed` row with a one-line message, the suite goes on, and the
next run tries the cell again from its checkpoint. Errors that concern the whole run (a
results folder that cannot be written) are found before the data loads.

Several runners may share one results folder (a job array, or two GPUs of one host): each
claims a cell with a lock before training it and passes over cells another live runner
holds, so no cell is trained twice at once.

Under torchrun (data parallelism, harness.train.replica) the processes go through the cells
together: rank 0 alone scans, claims, prints and writes, and broadcasts each decision (train,
skip, busy) so that every process trains the same cell at the same time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.app import jobs
from harness.app.console import RunConsole
from harness.app.duration import long_suite_line
from harness.config.schema import IMAGE_FOLDERS
from harness.config.suite import Cell, Suite, select_some
from harness.core.epoch import EpochRecord
from harness.core.schedule import updates_per_epoch
from harness.data.arrays import arrays_source, load_arrays
from harness.data.cifar10 import (
    cifar10_source,
    cifar100_source,
    load_cifar10,
    load_cifar100,
    resolve_data_root,
    synthetic_cifar10,
)
from harness.data.device import DeviceData
from harness.data.folder import FolderData
from harness.data.image_loader import open_image_folder
from harness.errors import UserError
from harness.fsio import atomic_path, check_folders, remove, shown
from harness.models.factory import FactoryError, build_factory_model, load_factory
from harness.models.registry import input_channels, input_size
from harness.results import lock, store
from harness.results.paths import default_folder
from harness.results.provenance import environment, source_version
from harness.train.checkpoint import Progress
from harness.train.loop import train_cell
from harness.train.preempt import StopSignals, StopVote
from harness.train.replica import (
    check_divisible,
    from_environment,
    launch_env,
    launched_by_torchrun,
)

FINISHED = ("ok", "diverged")  # statuses a re-run skips; a failed cell is tried again


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # claimed by another runner
    paused: list[str] = field(default_factory=list)  # --stop-after: checkpointed, not finished
    not_started: list[str] = field(default_factory=list)  # --stop-after: the time was up
    signal: str | None = None  # SIGTERM, SIGUSR1 or SIGUSR2 paused the run (preempt)

    def line(self) -> str:
        parts = [f"{len(self.ran)} trained", f"{len(self.skipped)} already finished"]
        if self.paused or self.not_started:
            why = "--stop-after" if self.signal is None else self.signal
            parts.append(
                f"{len(self.paused)} paused and {len(self.not_started)} not started "
                f"({why}; rerun to continue)"
            )
        if self.busy:
            parts.append(f"{len(self.busy)} busy in another runner")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (rerun to retry them)")
        return ", ".join(parts)


def available_devices() -> list[str]:
    """The devices a cell can train on here, by name: cpu, cuda:N for each GPU, mps."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | None, flag: str = "--device") -> Any:
    """The torch device for --device NAME (None: cuda if available, else cpu); a `UserError`
    naming what is available for anything training cannot use here (meta, xla, cuda:7).
    `flag`: the option named in the error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = f"available here: {', '.join(available_devices())}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {name}: unknown; use cpu, cuda[:N] or mps ({here})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {name}: no CUDA device is visible here ({here})")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"{flag} {name}: only {count} GPU(s) visible ({here})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{flag} {name}: MPS is not available here ({here})")
    elif device.type != "cpu":
        raise UserError(
            f"{flag} {name}: not a device the harness trains on; use cpu, cuda[:N] or mps ({here})"
        )
    return device


CELL_ORDERS = ("suite", "most-updates", "fewest-updates")


def order_cells(cells: tuple[Cell, ...], order: str) -> tuple[Cell, ...]:
    """The cells in the order a runner claims them (--order).

    "suite": as the suite lists them. "most-updates": the cells with the most optimizer steps
    first, the longest-processing-time rule: when K workers share the cells (--devices,
    --per-device), the long, launch-bound cells start at once instead of last, and the run's
    wall clock is the longest cell's, not the sum of a queue. "fewest-updates": the most
    finished cells per minute on one worker. Ties keep the suite's order.
    """
    if order not in CELL_ORDERS:
        raise UserError(f"--order {order}: choose one of {', '.join(CELL_ORDERS)}")
    if order == "suite":
        return cells
    sign = -1 if order == "most-updates" else 1
    return tuple(sorted(cells, key=lambda c: sign * c.plan.updates))


def check_memory_fraction(fraction: float | None, device: Any) -> None:
    """--memory-fraction: a number in (0, 1], and only for a CUDA device; then the cap is set
    (torch.cuda.set_per_process_memory_fraction: the caching allocator refuses more, and the
    cell fails as out of memory instead of starving the device's other workers)."""
    if fraction is None:
        return
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise UserError(
            f"--memory-fraction {fraction}: must be in (0, 1], the share of the GPU's memory "
            "this process may take (e.g. 0.25 for one of four workers on a device)"
        )
    if device.type != "cuda":
        raise UserError(
            f"--memory-fraction {fraction}: caps a CUDA device's memory; this run is on "
            f"{device.type}: drop the option"
        )
    torch.cuda.set_per_process_memory_fraction(fraction, device)


def check_stop_after(seconds: float | None) -> None:
    """--stop-after must be a finite, non-negative number of seconds (nan, inf, -1 refused)."""
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        raise UserError(
            f"--stop-after {seconds}: must be a finite number of seconds, 0 or more "
            "(e.g. --stop-after 3600 pauses each cell at the epoch boundary before an hour)"
        )


def data_groups(suite: Suite, cells: tuple[Cell, ...]) -> list[tuple[Cell, ...]]:
    """The cells in groups that train on one loading of the data, in the order given.

    One group but for an image folder without `dataset.image_size` whose models crop to
    different sides (ResNet-50 at 224 px beside Inception-ResNet-V2 at 299): then one group
    per side, each with the folder opened at its size, in the order of each size's first cell.
    """
    if suite.spec.dataset.name not in IMAGE_FOLDERS or suite.spec.dataset.image_size is not None:
        return [cells]
    groups: dict[int | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(input_size(cell.model.name), []).append(cell)
    return [tuple(group) for group in groups.values()]


def load_data(
    suite: Suite,
    data_root: Path | None,
    device: Any,
    channels_last: bool,
    cells: tuple[Cell, ...] | None = None,
) -> tuple[Any, str]:
    """The suite's dataset on `device`, and which copy of it that is (see cifar10_source).

    `cells` (default: all the suite's): the cells it is for; an image folder without
    `dataset.image_size` is cropped to their models' side (`data_groups` makes them agree).
    """
    if suite.spec.dataset.name in IMAGE_FOLDERS:
        return _load_image_folder(
            suite, data_root, device, channels_last, suite.cells if cells is None else cells
        )
    ds = suite.spec.dataset
    stats = None
    if ds.name == "synthetic":
        assert ds.train_size is not None and ds.test_size is not None
        arrays = synthetic_cifar10(ds.train_size, ds.test_size, seed=0)
        source = "synthetic"
    elif ds.name == "arrays":
        assert ds.path is not None and ds.classes is not None and ds.train_size is not None
        path = Path(ds.path).expanduser()
        channels = None if ds.mean is None else len(ds.mean)
        arrays = load_arrays(
            path,
            classes=ds.classes,
            train_size=ds.train_size,
            test_size=ds.test_size,
            channels=channels,
            takes=_channels_taken(suite.cells if cells is None else cells),
        )
        source = arrays_source(path)
        if ds.mean is not None and ds.std is not None:
            stats = (ds.mean, ds.std)
    elif ds.name == "cifar100":
        root = resolve_data_root(data_root)
        arrays = load_cifar100(root, train_size=ds.train_size, test_size=ds.test_size)
        source = cifar100_source(root)
    else:
        root = resolve_data_root(data_root)
        arrays = load_cifar10(root, train_size=ds.train_size, test_size=ds.test_size)
        source = cifar10_source(root)
    data = DeviceData.from_arrays(
        arrays, device, channels_last=channels_last, augment=ds.augment, stats=stats
    )
    return data, source


def _channels_taken(cells: tuple[Cell, ...]) -> tuple[int, str] | None:
    """The image channels the cells' models take, and the first model that says so (a model
    from the user's own code says nothing until built; then the first step would tell)."""
    for cell in cells:
        channels = input_channels(cell.model.name)
        if channels is not None:
            return channels, f"{cell.model_name!r} ({cell.model.name})"
    return None


def imagenet_root(suite: Suite, data_root: Path | None) -> Path:
    """`dataset.path`, else `imagenet/` under --data / $HARNESS_DATA (or that folder itself
    when it holds train/ and val/); a missing folder is one line naming what is missing."""
    ds = suite.spec.dataset
    if ds.path is not None:
        root = Path(ds.path).expanduser()
        what = "ImageNet folder" if ds.name == "imagenet" else "image folder"
        if not root.is_dir():
            raise UserError(f"{suite.path}: dataset.path: no {what} at {root}")
        if ds.name == "imagefolder" and not ((root / "train").is_dir() and (root / "val").is_dir()):
            raise UserError(
                f"{suite.path}: dataset.path: {root} holds no train/ and val/ folders; put "
                "train/<class>/* and val/<class>/* images there"
            )
        return root
    base = resolve_data_root(data_root)
    if (base / "train").is_dir() and (base / "val").is_dir():
        return base
    if not (base / "imagenet").is_dir():
        raise UserError(
            f"no ImageNet folder at {base / 'imagenet'}: put imagenet/train/<wnid>/*.JPEG and "
            "imagenet/val/ under --data (or $HARNESS_DATA), or set dataset.path"
        )
    return base / "imagenet"


def _load_image_folder(
    suite: Suite,
    data_root: Path | None,
    device: Any,
    channels_last: bool,
    cells: tuple[Cell, ...],
) -> tuple[Any, str]:
    """The ImageNet folder, scanned once, served by DataLoader workers (harness.data.folder).

    N is the number of readable training images, and the plans were made for
    `dataset.train_size`: if the two differ the run is refused, naming both and the cure,
    rather than training a different number of updates than `harness plan` says.
    """
    ds = suite.spec.dataset
    size = ds.image_size
    if size is None:
        sizes = {input_size(cell.model.name) for cell in cells}
        if None in sizes:  # a model from your own code (factory:) states no input side
            raise UserError(
                f"{suite.path}: dataset.image_size: a model of this suite states no input size "
                "(e.g. one from factory:); set image_size (e.g. 224)"
            )
        if len(sizes) != 1:
            raise UserError(
                f"{suite.path}: dataset.image_size: the suite's models crop to different sizes "
                f"({', '.join(sorted(str(s) for s in sizes))} px); set one image_size"
            )
        size = sizes.pop()
    assert size is not None
    root = imagenet_root(suite, data_root)
    folder = open_image_folder(
        root,
        size,
        check=suite.spec.execution.image_check,
        max_pixels=suite.spec.execution.max_image_pixels,
    )
    if ds.name == "imagefolder" and len(folder.classes) != ds.classes:
        raise UserError(
            f"{root / 'train'}: {len(folder.classes)} class folders, but dataset.classes is "
            f"{ds.classes}; pass --set dataset.classes={len(folder.classes)}"
        )
    planned = ds.n_train
    if folder.n_train != planned:
        raise UserError(
            f"{root / 'train'}: {folder.n_train} readable images, but the suite's schedules "
            f"are planned for N = {planned} (dataset.train_size); pass --set "
            f"dataset.train_size={folder.n_train} to plan for this folder, or restore the images"
        )
    if ds.test_size is not None and folder.n_val != ds.test_size:
        raise UserError(
            f"{root / 'val'}: {folder.n_val} readable images, but dataset.test_size is "
            f"{ds.test_size}; pass --set dataset.test_size={folder.n_val}"
        )
    workers = suite.spec.execution.loader_workers
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    data = FolderData(
        folder, device, workers=workers, channels_last=channels_last, augment=ds.augment
    )
    return data, data.describe(root)


def check_factories(
    suite: Suite, cells: tuple[Cell, ...], say: RunConsole | None
) -> dict[str, dict[str, Any]]:
    """Each user's model (`factory:`) of `cells` imported and built once, before training:
    a bad one is the whole run's error (`FILE:LINE: models.NAME.factory: ...`, exit 2), a good
    one gets its note (what ghost batch norm changed) and its provenance for the rows."""
    seen: dict[str, dict[str, Any]] = {}
    for cell in cells:
        ref = jobs.model_config(cell).factory
        if ref is None or cell.model_name in seen:
            continue
        ghost = cell.training.ghost_batch_size
        try:
            _, source = load_factory(ref)
            with torch.random.fork_rng(devices=[]):
                _, conversion = build_factory_model(
                    ref, num_classes=cell.dataset.num_classes, ghost_size=ghost
                )
        except FactoryError as exc:
            raise suite.error(("models", cell.model_name, "factory"), str(exc)) from None
        seen[cell.model_name] = source_version(source)
        if say is not None:
            say.line(f"model {cell.model_name}: {ref.target}: {conversion.note(ghost)}")
    return seen


def _check_divisible(cells: tuple[Cell, ...], suite: Suite, world: int) -> None:
    for cell in cells:
        batches = sorted({p.batch_size for p in cell.plan.phases})
        why = check_divisible(batches, world, cell.training.ghost_batch_size)
        if why is not None:
            raise UserError(f"{suite.path}: cell {cell.cell_id} ({cell.label}): {why}")


_SUBFOLDERS = ("runs", "curves", "checkpoints", "logs")


def _check_writable(results: Path) -> None:
    """Fail before any data loads if rows could not be written (a whole-run error), or if a
    subfolder the rows go to is a link (harness.fsio: nothing is written through one)."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results, prefix=".harness-probe-"):
            pass
        check_folders(results, _SUBFOLDERS)
    except OSError as exc:
        raise UserError(
            f"{results}: the results folder is not writable ({exc.strerror or exc}); "
            "pass --results DIR with a folder you can write"
        ) from None


def _finished(results: Path, say: RunConsole) -> set[str]:
    """Cells with a finished run row. A damaged run file is moved aside (never deleted), so
    its cell counts as not finished and trains again."""
    if not results.is_dir():
        return set()
    check_folders(results, _SUBFOLDERS)  # a linked runs/: nothing in it is moved aside
    runs, skipped = store.scan_runs(results)
    for path, reason in skipped:
        aside = store.quarantine(path)
        say.line(
            f"warning: {shown(path)}: unreadable ({reason}); moved to {shown(aside.name)}, "
            "will retrain"
        )
    if runs.empty:
        return set()
    return set(runs.loc[runs["status"].isin(FINISHED), "cell_id"])


def run_suite(
    suite: Suite,
    *,
    results: Path | None = None,
    only: str | None = None,
    device: str | None = None,
    data: Path | None = None,
    force: bool = False,
    max_micro_batch: int | None = None,
    compile_model: bool | None = None,
    stop_after: float | None = None,
    console: RunConsole | None = None,
    keep_signals: bool = False,
    order: str = "suite",
    memory_fraction: float | None = None,
) -> RunSummary:
    """Train the selected cells of `suite` into `results` (default `results.paths.default_folder`).

    `stop_after` (seconds from now): each cell pauses at the last epoch boundary that fits
    (after at least one epoch); no cell but the first starts once the time is up. A paused
    cell writes no rows: its checkpoint holds its finished epochs; the next run resumes it.
    `console`: what the run says, and hears after every epoch (default: a `RunConsole` on
    stderr, quiet on data-parallel ranks but 0). `keep_signals`: the process ends after this
    call (the CLI), so SIGTERM/SIGUSR1/SIGUSR2 stay caught after the cells are done.
    `order`: which cell is claimed first (`order_cells`). `memory_fraction`: a cap on this
    process's share of the GPU's memory (`check_memory_fraction`).
    """
    check_stop_after(stop_after)
    deadline = None if stop_after is None else time.monotonic() + stop_after
    results = results or default_folder(suite.name)
    cells = order_cells(select_some(suite, only), order)
    execution = jobs.execution(suite.spec.execution, cells, max_micro_batch, compile_model)
    replica = None
    torch_device = None
    if launched_by_torchrun():
        _check_divisible(cells, suite, launch_env().world)
        if device is not None and device not in ("cpu", "cuda"):
            raise UserError(f"--device {device}: under torchrun use cpu or cuda (one per rank)")
        replica = from_environment(device)
    else:
        torch_device = resolve_device(device)  # before anything is scanned or loaded
    check_memory_fraction(memory_fraction, torch_device if replica is None else replica.device)
    main = replica is None or replica.is_main
    say = RunConsole(quiet=not main) if console is None else console
    done = set() if force or not main else _finished(results, say)
    summary = RunSummary()
    for cell in cells:
        if cell.cell_id in done:
            say.line(f"skip  {cell.cell_id} {cell.label}: finished (rerun with --force)")
    if replica is None and all(c.cell_id in done for c in cells):
        summary.skipped = [c.cell_id for c in cells]
        return summary
    torch_device = torch_device if replica is None else replica.device
    models = check_factories(suite, cells, say if main else None)
    if main:
        _check_writable(results)
    env = {**environment(torch_device), "models": models}
    env.update(world_size=1, devices=str(torch_device))
    if replica is not None:
        env.update(world_size=replica.world, devices=replica.devices())
    todo = [c for c in cells if c.cell_id not in done]
    say.plan_suite(todo)
    if main:  # days of training ahead: one line before the first cell, then on
        long_line = long_suite_line(todo, torch_device, str(env["device_name"]))
        if long_line:
            say.line(long_line)
    with StopSignals().installed(keep=keep_signals) as signals:
        vote = StopVote(signals, replica)
        for group in data_groups(suite, cells):
            if replica is None and all(c.cell_id in done for c in group):
                continue  # nothing of this crop size to train: its images are not read
            dataset, source = load_data(suite, data, torch_device, execution.channels_last, group)
            _run_cells(
                group,
                results,
                dataset,
                execution,
                {**env, "data_source": source},
                force,
                say,
                summary,
                deadline,
                replica,
                done,
                vote,
            )
    if (signals.requested or vote.stopped) and (summary.paused or summary.not_started):
        summary.signal = signals.name if signals.requested else "a signal to another process"
    return summary


def _ticking(vote: Any, say: RunConsole) -> Any:
    """The stop vote, asked after every step, telling a live console of the step first; the
    vote itself where nothing is drawn (a log: no per-step cost)."""
    if vote is None or not say.live:
        return vote

    def stop() -> bool:
        say.tick()
        return bool(vote())

    return stop


def _run_cells(
    cells: tuple[Cell, ...],
    results: Path,
    dataset: Any,
    execution: Any,
    env: dict[str, Any],
    force: bool,
    say: RunConsole,
    summary: RunSummary,
    deadline: float | None,
    replica: Any,
    done: set[str],
    vote: Any,
) -> None:
    main = replica is None or replica.is_main
    started = False
    for cell in cells:
        with contextlib.ExitStack() as held:
            # Rank 0 decides (and holds the claim while every process trains); all follow it.
            refused = None
            decision = 0
            if main:
                try:
                    decision = _decide(cell, results, done, force, started, deadline, held, vote)
                except (UserError, OSError) as exc:  # a planted link, a folder named .lock
                    refused, decision = " ".join(str(exc).split()), _REFUSED
            if replica is not None:
                decision = replica.broadcast_int(decision)
            if decision == _REFUSED:
                # The cell's failure, not the suite's: its row says why, the others go on.
                if main:
                    _record_failure(cell, results, env, say, summary, refused or "refused")
                else:
                    summary.failed.append(cell.cell_id)
            elif decision == _SKIP:
                summary.skipped.append(cell.cell_id)
            elif decision == _LATE:
                summary.not_started.append(cell.cell_id)
            elif decision == _BUSY:
                summary.busy.append(cell.cell_id)
                who = lock.holder(results, cell.cell_id) or "another runner"
                say.line(f"busy  {cell.cell_id} {cell.label}: {who} is training it")
            else:
                started = True
                _run_cell(
                    cell,
                    results,
                    dataset,
                    execution,
                    env,
                    force,
                    say,
                    summary,
                    deadline,
                    replica,
                    vote,
                )


_TRAIN, _SKIP, _LATE, _BUSY, _REFUSED = 1, 2, 3, 4, 5
_NO_METRICS = ("final_test_acc", "best_test_acc", "final_test_loss", "final_train_loss")


def _record_failure(
    cell: Cell, results: Path, env: dict[str, Any], say: RunConsole, summary: RunSummary, why: str
) -> None:
    """A cell that could not even be claimed (its lock file is a link, a folder, a device):
    a failed run row saying why, as for any failed cell."""
    from harness.train.checkpoint import Progress

    progress = Progress(status="failed", error=why)
    record = jobs.run_record(cell, progress, dict.fromkeys(_NO_METRICS, math.nan), 0, env)
    _write_rows(cell, results, record, [])
    summary.failed.append(cell.cell_id)
    say.line(f"fail  {cell.cell_id} {cell.label}: {why}")


def _write_rows(cell: Cell, results: Path, record: Any, curves: list[Any]) -> Any:
    """Write the cell's rows; returns the record written. A curve file that is a link fails
    the cell (its run row alone is written, saying why) rather than the suite."""
    from harness.fsio import LinkRefused

    try:
        try:
            store.write_cell(results, record, curves)
        except LinkRefused as exc:
            if exc.path != store.curve_file(results, cell.cell_id):
                raise  # runs/ or curves/ itself: the whole folder, not this cell
            record = dataclasses.replace(record, status="failed", error=str(exc))
            store.write_run(results, record)
    except OSError as exc:
        raise UserError(
            f"{results}: could not write the rows of cell {cell.cell_id} "
            f"({exc.strerror or exc}); free space or pass --results DIR, then rerun"
        ) from None
    return record


def _decide(
    cell: Cell,
    results: Path,
    done: set[str],
    force: bool,
    started: bool,
    deadline: float | None,
    held: contextlib.ExitStack,
    vote: Any = None,
) -> int:
    """Whether this runner trains `cell` now; on _TRAIN its claim is held by `held`."""
    if cell.cell_id in done:
        return _SKIP
    if vote is not None and (vote.stopped or vote.signals.requested):
        return _LATE  # a signal asked the run to stop: no cell starts after it
    # The first cell always starts (and trains at least one epoch): a run makes progress.
    if started and deadline is not None and time.monotonic() >= deadline:
        return _LATE
    # Concurrent runners on one folder (a job array, say) each take the cells nobody holds.
    if not held.enter_context(lock.claim(results, cell.cell_id)):
        return _BUSY
    # The claim is held: any temporary file of this cell is a dead writer's (see the function).
    for path in store.stale_temporaries(results, cell.cell_id):
        remove(path, inside=results)
    if not force and store.cell_status(results, cell.cell_id) in FINISHED:
        return _SKIP  # finished by another runner meanwhile
    return _TRAIN


def _run_cell(
    cell: Cell,
    results: Path,
    dataset: Any,
    execution: Any,
    env: dict[str, Any],
    force: bool,
    say: RunConsole,
    summary: RunSummary,
    deadline: float | None = None,
    replica: Any = None,
    vote: Any = None,
) -> None:
    main = replica is None or replica.is_main
    checkpoint = store.checkpoint_path(results, cell.cell_id)
    if force and main:
        remove(checkpoint, inside=results)
    if replica is not None:
        replica.barrier()  # every process sees the checkpoint (or its absence) alike
    say.start(cell, resumed=checkpoint.exists())
    curves: list[EpochRecord] = []
    try:
        result = train_cell(
            jobs.train_job(cell),
            dataset,
            execution,
            checkpoint,
            on_epoch=say.epoch,
            deadline=deadline,
            replica=replica,
            stop=_ticking(vote, say),
        )
        progress, final, peak = result.progress, result.final, result.peak_memory_bytes
        curves = progress.curves
    except Exception as exc:  # a cell's failure is the cell's: recorded, and the suite goes on
        progress = Progress(status="failed", error=_failure(cell, exc, results))
        final = dict.fromkeys(_NO_METRICS, math.nan)
        peak = 0
    finally:
        say.stop()
    if not main:  # rank 0 writes; the others keep the outcome for their summary
        bucket = {"paused": summary.paused, "failed": summary.failed}
        bucket.get(progress.status, summary.ran).append(cell.cell_id)
        return
    if progress.status == "paused":
        summary.paused.append(cell.cell_id)
        why = "--stop-after"
        if vote is not None and vote.stopped:
            why = vote.signals.name if vote.signals.requested else "a signal"
        say.line(
            f"pause {cell.cell_id} {cell.label}: epoch {_where(progress, cell)} "
            f"checkpointed in {checkpoint} ({why}); rerun to resume"
        )
        return
    record = jobs.run_record(cell, progress, final, peak, env)
    record = _write_rows(cell, results, record, jobs.curve_records(cell, curves))
    say.finished(cell, record)  # the rows are written: a tracker's summary (app.tracking)
    if record.status == "failed" and progress.status != "failed":
        progress.status, progress.error = "failed", record.error
    if progress.status == "failed":
        # The row says why; the checkpoint stays, and the next run resumes the cell.
        summary.failed.append(cell.cell_id)
        say.line(f"fail  {cell.cell_id} {cell.label}: {progress.error}")
        return
    remove(checkpoint, inside=results)
    summary.ran.append(cell.cell_id)
    say.line(_summary_line(cell, record.as_row()))
    if progress.error:  # an ok row's note: a checkpoint that did not fit the plan
        say.line(f"note  {cell.cell_id} {cell.label}: {progress.error}")


def _where(progress: Any, cell: Cell) -> str:
    """How far a paused cell got: "2/3", or "2/3 + step 5 of 12" mid-epoch."""
    done = f"{progress.epoch}/{cell.plan.epochs}"
    if progress.partial is None:
        return done
    plan = cell.plan_after(progress.decisions)
    batch = plan.phase_at(progress.epoch).batch_size
    steps = updates_per_epoch(plan.train_size, batch, plan.drop_last)
    return f"{done} + step {progress.partial['step']} of {steps}"


def _failure(cell: Cell, exc: Exception, results: Path) -> str:
    """One line for the row; a bug's traceback goes to a log file beside the rows."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, UserError):
        return message
    log = results / "logs" / f"{cell.cell_id}.log"
    try:
        with atomic_path(log, inside=results) as tmp:
            tmp.write_text("".join(traceback.format_exception(exc)))
        where = f"; traceback in {log}"
    except (OSError, UserError):  # no log beside the rows (a link there is never followed)
        # A full disk: no log, rather than an empty one that seems to say nothing happened.
        with contextlib.suppress(OSError, UserError):
            remove(log, inside=results)
        where = ""
    return f"cell {cell.cell_id} ({cell.label}) failed: {type(exc).__name__}: {message}{where}"


def _summary_line(cell: Cell, row: dict[str, Any]) -> str:
    return (
        f"{row['status']:<5} {cell.cell_id} {cell.label}: "
        f"test acc {row['final_test_acc']:.4f}, train loss {row['final_train_loss']:.4f}, "
        f"{row['updates']} updates (plan {row['planned_updates']}), "
        f"{row['wall_clock_s']:.1f} s, {row['images_per_s']:.0f} img/s"
    )
