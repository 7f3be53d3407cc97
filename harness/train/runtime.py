"""The device under the training loop: clocks, precision and memory, the same on every backend.

Device work is asynchronous, so a clock read without `synchronize` measures the host's
queueing, not the device's work. Everything here is a thin, backend-aware wrapper so that the
loop reads the same on CPU, CUDA and MPS.
"""

from __future__ import annotations

import contextlib
import resource
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work; the only way to read a clock honestly on an accelerator."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 under bf16 autocast; float64 stays float64 (exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def peak_memory(device: torch.device) -> int:
    """Peak device memory of this process; on the CPU the host's max resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
