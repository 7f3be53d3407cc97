"""Checkpoints: what a cell has done so far, saved every epoch so a killed run resumes exactly.

A checkpoint holds tensors and plain containers only and is read with
``torch.load(weights_only=True)``: results folders are shared between people and machines,
and a pickle that names a callable would otherwise run it on resume. Anything unreadable,
truncated, foreign or crafted becomes one `CheckpointError` naming the file and the cure.
Tensors are loaded onto the training device, so a checkpoint made on a GPU resumes on a CPU
and the other way round.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError
from harness.fsio import atomic_path

CHECKPOINT_VERSION = 2


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed from; the message names the file and what to do."""


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
        "progress": asdict(progress),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: Path,
    cell_id: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> Progress | None:
    """Restore `model` and `optimizer` from `path`; None if there is no checkpoint."""
    if not path.exists():
        return None
    cure = "move it away (or rerun with --force) to train the cell from the start"
    try:
        with warnings.catch_warnings():
            # A crafted file's odd pickle protocol draws a torch warning before the refusal.
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, empty, not a zip, or a pickle naming a callable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable checkpoint ({reason[:200]}); {cure}") from None
    if not isinstance(state, dict) or not {"version", "model", "optimizer"} <= state.keys():
        raise CheckpointError(f"{path}: not a harness checkpoint; {cure}")
    if state["version"] != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {state['version']}, this harness reads "
            f"{CHECKPOINT_VERSION}; {cure}"
        )
    if state.get("cell_id") != cell_id:
        raise CheckpointError(
            f"{path}: belongs to cell {state.get('cell_id')}, not {cell_id}; {cure}"
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        known = {f.name for f in dataclasses.fields(Progress)}
        progress = Progress(**{k: v for k, v in state["progress"].items() if k in known})
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: does not fit this cell ({reason[:200]}); {cure}") from None
    return progress
