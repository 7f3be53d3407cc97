"""Which runner trains a cell: an OS-level lock per cell, so runners can share a folder.

Runners of one suite (a job array, two terminals) may point at the same results folder; each
claims a cell before training it and passes over the cells others hold. The claim is an
exclusive `flock` on ``checkpoints/.<cell_id>.flock``, opened without following links
(`harness.fsio.open_lock`: a planted link is refused, never truncated or locked through). The
kernel drops it when its holder exits, however it exits, so a killed runner never leaves a
lock to take over and there is no stale-lock race. The lock file itself is never deleted:
unlinking a locked path would let a later runner lock a fresh inode under the same name while
another still holds the old one. Its presence therefore means nothing; only the kernel's lock does.

For people, ``checkpoints/<cell_id>.lock`` (`lock_path`) says "host pid" of the holder while
a cell is claimed; it is written after the lock is taken and removed before it is released,
and a killed holder's leftover is simply overwritten by the next one.

Caveat: the guarantee is only as good as the file system's `flock`. Local file systems and
NFSv4 on Linux honour it; some cluster and network file systems (Lustre mounted without
``-o flock``, old NFS, some FUSE mounts) ignore it or refuse it, and there two runners may
train the same cell. Give each runner its own results folder (and merge them by copying
files) on such file systems.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from harness.fsio import atomic_path, open_lock, read_small, remove
from harness.results.paths import checkpoints_dir


def lock_path(results: Path, cell_id: str) -> Path:
    """The human-readable claim of a cell: "host pid" of its holder, while it is held."""
    return checkpoints_dir(results) / f"{cell_id}.lock"


def _flock_path(results: Path, cell_id: str) -> Path:
    return checkpoints_dir(results) / f".{cell_id}.flock"


def holder(results: Path, cell_id: str) -> str | None:
    """Who holds the cell, as its claim says ("host pid"), or None if that is unknown."""
    text = read_small(lock_path(results, cell_id), inside=results)  # a link, FIFO: unknown
    return (text or "").strip() or None


@contextlib.contextmanager
def claim(results: Path, cell_id: str) -> Iterator[bool]:
    """Claim a cell for this process while the block runs; yields False if another holds it.

    Never waits. Another claim of the same cell fails while this one is held, from any
    process, this one included. `harness.fsio.LinkRefused` (before anything is written) if
    the lock file or the claim is a link, a folder or a device.
    """
    # Group members sharing the folder can open the lock file for writing too (umask mode).
    fd = open_lock(_flock_path(results, cell_id), inside=results)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        record = lock_path(results, cell_id)
        with atomic_path(record, inside=results) as tmp:
            tmp.write_text(f"{socket.gethostname()} {os.getpid()}\n")
        try:
            yield True
        finally:
            remove(record, inside=results)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def live_holder(results: Path, cell_id: str) -> str | None:
    """Who is training the cell now, read without touching the lock (so it never makes a
    runner pass the cell over): its claim's "host pid", unless that names a process of this
    host that no longer runs (a killed holder's leftover claim). A claim from another host
    cannot be checked from here and is believed."""
    who = holder(results, cell_id)
    if who is None:
        return None
    host, _, pid = who.partition(" ")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return who
