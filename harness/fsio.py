"""Writing files safely: atomic replacement, shared by every layer that writes to disk.

Results folders are shared (colleagues, job arrays), so what this module writes must be
readable by them as any other file they create would be, must never leave half a file, and
must never turn a symlink or a device node into a regular file behind the user's back.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness.errors import UserError


def umask() -> int:
    """The process's umask, read without changing it where the OS allows that."""
    try:
        # Setting the umask to read it would race with threads creating files meanwhile.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def new_file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the umask."""
    return 0o666 & ~umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`'s target, renamed onto it only if the block succeeds.

    A symlink is written through: its resolved target is replaced (atomically, in the target's
    folder) and the link stays. A new file gets the mode an ordinary `open()` would give it; a
    replaced file keeps its mode. `UserError` if the target exists and is not a regular file
    (a folder, a FIFO, a device such as /dev/null), since renaming over it would replace the
    node rather than write to it.
    """
    target = Path(os.path.realpath(path))
    try:
        info = target.stat()
    except FileNotFoundError:
        mode = new_file_mode()
    else:
        if not stat.S_ISREG(info.st_mode):
            shown = str(path) if target == Path(path) else f"{path} (-> {target})"
            raise UserError(f"{shown}: exists and is not a regular file; write to a file path")
        mode = stat.S_IMODE(info.st_mode)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600, which would hide the file from everyone sharing the folder.
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
