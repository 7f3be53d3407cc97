"""Where a row came from: code version, software versions, machine and device."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.allocator import state as allocator_state
from harness.version import __version__

_SOURCE = Path(__file__).resolve().parents[2]  # the checkout holding harness/


def _git(*args: str, where: Path = _SOURCE) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.cache
def code_version() -> dict[str, Any]:
    """The harness source's git commit and whether its tracked files differ from it.

    Where the source is no git checkout (a copy of the working tree sent to a lent GPU), the
    commit the copy was made from may travel with it: HARNESS_GIT_COMMIT, and HARNESS_GIT_DIRTY
    1 or 0 (scripts/prepare_gpu.sh records both, scripts/gpu_campaign.sh exports them)."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "harness", "suites")
        dirty = bool(status)
    else:
        commit = os.environ.get("HARNESS_GIT_COMMIT") or None
        flag = os.environ.get("HARNESS_GIT_DIRTY")
        dirty = None if commit is None or flag not in ("0", "1") else flag == "1"
    return {"git_commit": commit or "unknown", "git_dirty": dirty}


def source_version(path: str | None) -> dict[str, Any]:
    """A user's model file (a suite's `factory:`) and, where it is in a git checkout, that
    checkout's commit and whether the file differs from it (None outside a checkout)."""
    if path is None:
        return {"model_source": None, "model_commit": None, "model_dirty": None}
    folder = Path(path).parent
    commit = _git("rev-parse", "HEAD", where=folder)
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--", Path(path).name, where=folder)
        dirty = None if status is None else bool(status)
    return {"model_source": path, "model_commit": commit, "model_dirty": dirty}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{cpu_name()} ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)


def environment(device: Any) -> dict[str, Any]:
    import torch

    return {
        **code_version(),
        "device": device.type,
        "device_name": device_name(device),
        "hostname": socket.gethostname(),
        "python_version": sys.version.split()[0],
        "torch_version": torch.__version__,
        "harness_version": __version__,
        "allocator": allocator_state(),
    }
