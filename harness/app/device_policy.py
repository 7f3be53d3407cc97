"""Which device a run trains on, and what it may take of it: `--device`, `--memory-fraction`,
and under torchrun that every step divides among the processes."""

from __future__ import annotations

import math

import torch

from harness.config.suite import Cell, Suite
from harness.errors import UserError
from harness.train.replica import (
    Replica,
    check_divisible,
    from_environment,
    launch_env,
    launched_by_torchrun,
)


def available_devices() -> list[str]:
    """The devices a cell can train on here, by name: cpu, cuda:N for each GPU, mps."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | None, flag: str = "--device") -> torch.device:
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


def check_memory_fraction(fraction: float | None, device: torch.device) -> None:
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


def check_divisible_cells(cells: tuple[Cell, ...], suite: Suite, world: int) -> None:
    for cell in cells:
        batches = sorted({p.batch_size for p in cell.plan.phases})
        why = check_divisible(batches, world, cell.training.ghost_batch_size)
        if why is not None:
            raise UserError(f"{suite.path}: cell {cell.cell_id} ({cell.label}): {why}")


def place_run(
    device: str | None, suite: Suite, cells: tuple[Cell, ...]
) -> tuple[torch.device, Replica | None]:
    """This process's device for `harness run --device`, and under torchrun its place in the
    job (one device per rank: --device cpu or cuda; every step divisible among the ranks)."""
    if not launched_by_torchrun():
        return resolve_device(device), None
    check_divisible_cells(cells, suite, launch_env().world)
    if device is not None and device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: under torchrun use cpu or cuda (one per rank)")
    replica = from_environment(device)
    return replica.device, replica
