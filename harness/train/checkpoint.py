"""Checkpoints: what a cell has done so far, saved every epoch so a killed run resumes exactly.

Saved at every epoch boundary, and mid-epoch when a signal pauses the run (`Progress.partial`,
harness.train.preempt): then the step index and every accumulator of the unfinished epoch
travel with it, and the resumed epoch continues at the next step.

A checkpoint's progress is checked against the cell's plan before anything is loaded
(`check_progress`): one whose epoch, update count or curve rows the plan cannot produce (an
edited or foreign file) raises `ProgressMismatch`, and the cell trains from scratch.

A checkpoint holds tensors and plain containers only and is read with
``torch.load(weights_only=True)``: results folders are shared between people and machines,
and a pickle that names a callable would otherwise run it on resume. Anything unreadable,
truncated, foreign or crafted becomes one `CheckpointError` naming the file and the cure.
Tensors are loaded onto the training device, so a checkpoint made on a GPU resumes on a CPU
and the other way round, mid-epoch too: the augmentation generator of an unfinished epoch is
re-derived from its seed and step on the resuming device (harness.data.device), never set
from the saved state, which only the device type that wrote it could take. An adaptive
cell's decisions are checked against its rule and the B_simple its curves measured
(harness.train.loop), an unfinished epoch's tier-0 counters against its step
(`harness.train.audit.state_problem`).
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.core.decided import Decision
from harness.core.epoch_record import EpochRecord
from harness.core.schedule import Plan, updates_per_epoch
from harness.errors import UserError
from harness.fsio import atomic_path, open_regular
from harness.train.audit import state_problem

CHECKPOINT_VERSION = 3  # 3: `partial` (mid-epoch); 2 is read as a checkpoint without one
_READABLE = (2, 3)
# A cap that only a forged file meets (a link to /dev/zero is refused before it): the largest
# model's weights, optimizer state and progress are far below it.
MAX_CHECKPOINT_BYTES = 64 << 30


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""


class ProgressMismatch(CheckpointError):
    """A readable checkpoint whose progress the cell's plan cannot have produced."""


@dataclass
class Progress:
    """What a cell has done so far; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    updates: int = 0  # optimizer steps completed
    images: int = 0  # training images seen (a partial last batch counts what it holds)
    curves: list[EpochRecord] = field(default_factory=list)  # saved as flat columns
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    warmup_time_s: float = 0.0
    wall_clock_s: float = 0.0  # earlier segments of a resumed cell
    started_at: float = field(default_factory=time.time)
    status: str = "ok"
    error: str | None = None
    partial: dict[str, Any] | None = None  # the unfinished epoch (PartialEpoch.as_dict())
    # An adaptive cell's decisions so far (harness.core.adaptive), saved as plain dicts: the
    # batches of the epochs trained and of the one in progress follow from them.
    decisions: list[Decision] = field(default_factory=list)


def save_checkpoint(
    path: Path,
    cell_id: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "cell_id": cell_id,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": {**asdict(progress), "curves": [r.columns() for r in progress.curves]},
    }
    try:
        # A checkpoint is <results>/checkpoints/<id>.pt: neither it, its temporary nor the
        # checkpoints/ folder is written through a link (harness.fsio, a shared folder's rule).
        with atomic_path(path, inside=path.parent.parent) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:
        why = write_failure(path, exc)
        if why is None:
            raise
        raise CheckpointError(why) from exc


# What torch's zip writer raises when a write comes up short (a full disk, a quota):
# "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598" or
# "PytorchStreamWriter failed writing file data/0: file write failed", or, for a small state,
# "basic_ios::clear: iostream error" (all three seen writing to /dev/full, torch 2.13).
_TORCH_WRITE_FAILURES = (
    "inline_container.cc",
    "file write failed",
    "PytorchStreamWriter",
    "iostream error",
)


def write_failure(path: Path, exc: BaseException) -> str | None:
    """One line for a checkpoint that could not be written because the disk is full (or the
    write came up short), naming the path and the space left; None for any other error.

    torch's own message ("unexpected pos 704 vs 598") names neither the file nor the cause.
    """
    if isinstance(exc, OSError):
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return None
        cause = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILURES):
        cause = "the write came up short: no space left on device (or a quota)"
    else:
        return None
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free there"
    except OSError:
        free = "free space unknown"
    return (
        f"checkpoint {path}: could not write it, {cause} ({free}); free some space or pass "
        "--results DIR on another disk, then rerun (the cell resumes from its last checkpoint)"
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def load_checkpoint(
    path: Path,
    cell_id: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    plan: Plan | Callable[[Progress], Plan] | None = None,
) -> Progress | None:
    """Restore `model` and `optimizer` from `path`; None if there is no checkpoint.

    With `plan` (or a function giving the plan of a progress: an adaptive cell's follows from
    its decisions, and raises `ValueError` for decisions it cannot have made):
    `ProgressMismatch` (before the model is touched) if the progress does not fit it
    (`check_progress`)."""
    cure = "move it away (or rerun with --force) to train the cell from the start"
    if path.is_symlink():  # never read through: another user of the folder may have planted it
        raise CheckpointError(f"{path}: a symbolic link, not a checkpoint file; remove it")
    if not path.exists():
        return None
    try:
        # harness.fsio's one reader: no link, FIFO or device is opened (a FIFO would block).
        with (
            open_regular(path, inside=None, limit=MAX_CHECKPOINT_BYTES) as handle,
            warnings.catch_warnings(),
        ):
            # A crafted file's odd pickle protocol draws a torch warning before the refusal.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(handle, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, empty, not a zip, or a pickle naming a callable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({reason[:200]}); {cure}") from None
    if not isinstance(state, dict) or not {"version", "model", "optimizer"} <= state.keys():
        raise CheckpointError(f"{path}: not a harness checkpoint; {cure}")
    if state["version"] not in _READABLE:
        raise CheckpointError(
            f"{path}: checkpoint format {state['version']}, this harness reads "
            f"{CHECKPOINT_VERSION}; {cure}"
        )
    if state.get("cell_id") != cell_id:
        raise CheckpointError(
            f"{path}: belongs to cell {state.get('cell_id')}, not {cell_id}; {cure}"
        )
    try:
        known = {f.name for f in dataclasses.fields(Progress)}
        progress = Progress(**{k: v for k, v in state["progress"].items() if k in known})
        why = _records(progress)
        if why is None and plan is not None:
            try:
                planned = plan(progress) if callable(plan) else plan
            except ValueError as exc:
                why = f"its decisions do not fit this cell ({exc})"
            else:
                why = check_progress(progress, planned)
        if why is None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not fit this cell ({reason[:200]}); {cure}") from None
    if why is not None:
        raise ProgressMismatch(f"{path}: {why}")
    return progress


def check_progress(progress: Progress, plan: Plan) -> str | None:
    """Why `progress` is not a point the plan's training passes through; None if it is.

    The epoch is within the plan, the update count is the plan's count before that epoch, the
    curves hold one row per finished epoch with the plan's update count, and an unfinished
    epoch (`partial`) stopped strictly between its first and last step.
    """
    epoch = progress.epoch
    if not isinstance(epoch, int) or not 0 <= epoch <= plan.epochs:
        return f"epoch {epoch!r} is outside the plan's 0..{plan.epochs}"
    if progress.status != "ok":
        return f"status {progress.status!r}, where a checkpoint holds 'ok'"
    want = plan.updates_before(epoch)
    if progress.updates != want:
        return f"{progress.updates!r} updates after {epoch} epochs, the plan takes {want}"
    rows = [(row.epoch, row.updates) for row in progress.curves]
    planned = [(e, plan.updates_before(e)) for e in range(1, epoch + 1)]
    if rows != planned:
        return f"curve rows (epoch, updates) {rows[:4]}... do not match the plan's {planned[:4]}..."
    if progress.partial is not None:
        part = progress.partial
        if epoch == plan.epochs or part.get("epoch") != epoch:
            return f"an unfinished epoch {part.get('epoch')!r} after {epoch} finished epochs"
        steps = updates_per_epoch(plan.train_size, plan.phase_at(epoch).batch_size, plan.drop_last)
        if not isinstance(part.get("step"), int) or not 0 < part["step"] < steps:
            return f"step {part.get('step')!r} of epoch {epoch + 1}, which has {steps} steps"
        why = state_problem(part.get("audit"), part["step"], plan.phase_at(epoch).batch_size)
        if why is not None:
            return f"{why}, at step {part['step']} of epoch {epoch + 1}"
    return None


def _records(progress: Progress) -> str | None:
    """The saved curve rows (flat columns) as epoch records, in place; why not, if they are
    not this harness's."""
    try:
        progress.curves = [EpochRecord.from_columns(row) for row in progress.curves]  # type: ignore[arg-type]
    except (KeyError, TypeError, AttributeError) as exc:
        return f"curve rows are not epoch records ({type(exc).__name__}: {exc})"
    try:
        progress.decisions = [Decision(**d) for d in progress.decisions]  # type: ignore[arg-type]
    except TypeError as exc:
        return f"decisions are not decisions ({exc})"
    return None
