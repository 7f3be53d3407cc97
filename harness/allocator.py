"""glibc's allocator, set once at start-up so that a training step reuses its large buffers.

glibc serves every request above its mmap threshold (dynamic, at most 32 MiB) with a fresh
mmap and returns it with munmap on free. A CPU training step allocates and frees the same
activations, gradients and evaluation batches every step, so each step maps, page-faults and
unmaps them again: measured on a `suites/cifar-cpu.yaml` cell (issue 46), 136-138 s became
104 s with bit-identical curves once large buffers came from the heap, and system time of a
small CNN at B = 512 fell from 7-11 s to 1 s. `mallopt` does at run time what
`GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...` does at exec:

- ``M_MMAP_MAX = 0``: no request is served by mmap, so freed buffers go back to the heap's
  free lists and the next step's request of the same size is served from them;
- ``M_TRIM_THRESHOLD = 2 GiB - 1``: the heap's top is returned to the system only when that
  much is free, so the pages stay faulted in between steps.

The cost is memory: the process keeps its peak heap (the largest step's buffers) mapped until
it exits, instead of returning it between steps. The arithmetic is untouched (the same kernels
run on the same values; only where their buffers live changes), so it is not part of any cell
id. ``HARNESS_MALLOC=system`` leaves glibc's defaults (to compare, or where memory is short);
on other C libraries and systems this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest it can say
ENV = "HARNESS_MALLOC"
_chosen: str | None = None  # what tune() set in this process; None before it ran


@functools.cache
def tune() -> str:
    """Set glibc's allocator for training, once per process; returns what the process runs with:
    "glibc tuned", "glibc default" (HARNESS_MALLOC=system) or "default" (not glibc)."""
    choice = os.environ.get(ENV, "tuned").strip().lower()
    if choice not in ("tuned", "system"):
        from harness.errors import UserError

        raise UserError(f"{ENV}={choice!r}: use 'tuned' (the default) or 'system'")
    if not sys.platform.startswith("linux"):
        return "default"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError on musl and others
    except (OSError, AttributeError):
        return "default"
    if choice == "system":
        return "glibc default"
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "glibc tuned" if ok else "glibc default"


def tune_once() -> str:
    """`tune()`, remembering its answer for the rows' provenance (`state()`)."""
    global _chosen
    _chosen = tune()
    return _chosen


def state() -> str:
    """What this process's allocator is set to, for a row: "not set" where the harness did not
    set it (your own loop that never called `harness.tune_allocator()`)."""
    return _chosen or "not set"
