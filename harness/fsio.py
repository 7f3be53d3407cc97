"""Writing files safely: atomic replacement, shared by every layer that writes to disk.

Results folders are shared (colleagues, job arrays), so what this module writes must be
readable by them as any other file they create would be, must never leave half a file, and
must never turn a symlink or a device node into a regular file behind the user's back.

Inside a results folder (`atomic_path(path, inside=folder)`, `open_lock`, `remove`) nothing
is written, locked or removed through a symbolic link: anyone who may write the shared folder
could plant ``checkpoints/<id>.lock -> ~/thesis.tex`` and have the next user's run overwrite
it. Every folder between `inside` and the file is opened with ``O_NOFOLLOW`` (the folder
`inside` itself may be a link: the user named it), the temporary file is created with
``O_EXCL | O_NOFOLLOW`` in that opened folder, the writer reaches it through its descriptor
(``/proc/self/fd/N`` where there is one) and the rename happens within the opened folder, so
swapping a folder for a link mid-write cannot redirect the bytes either. A link, a folder or a
device where a file should be is refused with one line naming it (`LinkRefused`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from harness.errors import UserError, printable


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


class LinkRefused(UserError):
    """A path inside a results folder that is a link (or a folder or device where a file
    belongs), which the harness will not write, lock or remove through; `path` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = Path(path)


def shown(path: Path | str) -> str:
    """`path` as text that any terminal can print: bytes that are not UTF-8 in a file name
    (kept by Python as surrogates) become ``\\xNN`` escapes instead of a UnicodeEncodeError,
    and control characters escapes too (`harness.errors.printable`)."""
    return printable(os.fsencode(path).decode("utf-8", "backslashreplace"))


def printable_name(path: Path) -> bool:
    """Whether `path` is valid text (no undecodable bytes in its name)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def containing(path: Path, roots: Iterable[Path]) -> Path | None:
    """The first of `roots` that `path` lies in (resolved paths compared), else None: an
    output the user names inside a results folder is written with that folder's rule."""
    where = Path(os.path.realpath(path.parent)) / path.name
    for root in roots:
        real = Path(os.path.realpath(root))
        if where == real or real in where.parents:
            return root
    return None


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _refuse(path: Path, what: str) -> LinkRefused:
    return LinkRefused(
        f"{shown(path)}: {what}; the harness writes nothing through links in a results "
        "folder (another user may have planted it): remove it and rerun",
        path,
    )


def _parts(path: Path, inside: Path) -> tuple[str, ...]:
    try:
        parts = Path(path).relative_to(inside).parts
    except ValueError:  # spelled differently (relative, through the folder's own link)
        real = Path(os.path.realpath(Path(path).parent)) / Path(path).name
        try:
            parts = real.relative_to(os.path.realpath(inside)).parts
        except ValueError:
            raise ValueError(f"{path} is not inside {inside}") from None
    if not parts or ".." in parts:
        raise ValueError(f"{path} is not a file inside {inside}")
    return parts


def _open_folder(inside: Path, parts: tuple[str, ...], create: bool) -> int:
    """A descriptor of the folder `inside/parts...`, each part opened without following a
    link (and made if missing and `create`); `LinkRefused` naming the first part that is a
    link or not a folder, FileNotFoundError if one is missing and not `create`."""
    if create:
        Path(inside).mkdir(parents=True, exist_ok=True)
    fd = os.open(inside, _DIR_FLAGS)
    here = Path(inside)
    try:
        for part in parts:
            here = here / part
            try:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                raise _refuse(here, "is a symbolic link, not a folder")
            if not stat.S_ISDIR(info.st_mode):
                raise _refuse(here, "is not a folder")
            try:
                inner = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError:  # swapped for a link since the stat (ELOOP / ENOTDIR)
                raise _refuse(here, "is a symbolic link, not a folder") from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _regular_or_absent(fd: int, name: str, path: Path) -> os.stat_result | None:
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "is not a regular file (a folder, FIFO or device)")
    return info


def _through_descriptor(fd: int, fallback: Path) -> Path:
    """A path that opens the very file `fd` is (Linux's /proc/self/fd), so a writer given a
    path cannot be sent elsewhere by a folder swapped meanwhile; the plain path elsewhere."""
    magic = Path(f"/proc/self/fd/{fd}")
    return magic if magic.exists() else fallback


@contextlib.contextmanager
def _confined(path: Path, inside: Path) -> Iterator[Path]:
    parts = _parts(path, inside)
    folder = _open_folder(inside, parts[:-1], create=True)
    name = parts[-1]
    try:
        info = _regular_or_absent(folder, name, path)
        mode = new_file_mode() if info is None else stat.S_IMODE(info.st_mode)
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(tmp, flags, 0o600, dir_fd=folder)
        try:
            yield _through_descriptor(fd, path.parent / tmp)
            os.fchmod(fd, mode)
            _regular_or_absent(folder, name, path)  # planted meanwhile: refused, not replaced
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
    finally:
        os.close(folder)


def open_lock(path: Path, *, inside: Path) -> int:
    """A read-write descriptor of the lock file `path` in the results folder `inside`,
    created if missing, for `fcntl.flock`; never opened through a link (`LinkRefused`, as
    for a folder, FIFO or device there). The caller closes it."""
    parts = _parts(path, inside)
    folder = _open_folder(inside, parts[:-1], create=True)
    try:
        flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(parts[-1], flags, 0o666, dir_fd=folder)
        except OSError:
            _regular_or_absent(folder, parts[-1], path)  # a link or a folder: say so
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _refuse(path, "is not a regular file (a folder, FIFO or device)")
        return fd
    finally:
        os.close(folder)


class Refused(OSError):
    """A file of a results folder that `read_bytes` will not read: a link, not a regular file
    (a FIFO would block the reader, a device such as /dev/zero never ends) or larger than the
    reader's limit. An OSError, so that every reader's handling of an unreadable file covers it;
    its message is the reason, one line."""


@contextlib.contextmanager
def open_regular(path: Path, *, inside: Path | None, limit: int) -> Iterator[BinaryIO]:
    """The regular file `path` opened for reading: the one way the harness opens a file of a
    results folder (rows, checkpoints, claims, job lists); `read_bytes` reads it whole.

    Opened without following a link (with `inside`, the results folder, neither in any folder
    between it and `path`), without blocking (a FIFO), and checked to be a regular file of at
    most `limit` bytes before a byte is read; `Refused` naming why otherwise,
    FileNotFoundError if it is missing."""
    path = Path(path)
    if inside is not None:
        parts = _parts(path, inside)
        try:
            folder = _open_folder(inside, parts[:-1], create=False)
        except LinkRefused as exc:
            raise Refused(f"{shown(exc.path)} is a symbolic link or no folder") from None
        name = parts[-1]
    else:
        folder = os.open(path.parent, _DIR_FLAGS)
        name = path.name
    flags = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(name, flags, dir_fd=folder)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link
                raise Refused(
                    "a symbolic link, never read: the folder's files must be its own"
                ) from None
            raise
    finally:
        os.close(folder)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file (a FIFO, folder or device)")
        if info.st_size > limit:
            raise Refused(f"{info.st_size} bytes, over the {limit} such a file may hold")
        yield handle


def read_bytes(path: Path, *, inside: Path | None, limit: int) -> bytes:
    """The whole regular file `path`, at most `limit` bytes (`open_regular`); one that grows
    past `limit` while it is read is `Refused` too."""
    with open_regular(path, inside=inside, limit=limit) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Refused(f"grew past the {limit} bytes such a file may hold while it was read")
    return data


def read_small(path: Path, *, inside: Path, limit: int = 4096) -> str | None:
    """A small regular file of the results folder as text (`read_bytes`); None if it is
    missing, a link, not a regular file, larger than `limit` or unreadable."""
    try:
        return read_bytes(path, inside=inside, limit=limit).decode("utf-8", "replace")
    except (OSError, UserError, ValueError):
        return None


def remove(path: Path, *, inside: Path) -> None:
    """Delete the file `path` of the results folder `inside` if it is there; a link is
    removed itself (never its target), and no folder on the way is followed if a link."""
    parts = _parts(path, inside)
    try:
        folder = _open_folder(inside, parts[:-1], create=False)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=folder)
    finally:
        os.close(folder)


def make_folder(path: Path, *, inside: Path) -> None:
    """The folder `path` of the results folder `inside` made (with those between), none of
    them a link (`LinkRefused` naming the first that is): for a writer of its own, such as a
    tracker's library, that is handed a folder rather than a file."""
    os.close(_open_folder(inside, _parts(path, inside), create=True))


def open_new(path: Path, *, inside: Path) -> BinaryIO:
    """A new file `path` of the results folder `inside`, open for appending: a file that grows
    while a run goes (a tracker's event log), which `atomic_path` cannot write. Created with
    ``O_EXCL | O_NOFOLLOW`` in folders opened without following a link, so it is never an
    existing file, a link or anything a link points to (`LinkRefused`, or FileExistsError for
    a name taken). The caller closes it."""
    parts = _parts(path, inside)
    folder = _open_folder(inside, parts[:-1], create=True)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(parts[-1], flags, 0o666, dir_fd=folder)  # less the umask
        except FileExistsError:
            _regular_or_absent(folder, parts[-1], path)  # a link or a folder: say so
            raise
    finally:
        os.close(folder)
    return os.fdopen(fd, "ab")


def check_folders(inside: Path, names: Iterable[str]) -> None:
    """`LinkRefused` naming the first of the results folder's subfolders `names` that is a
    link (or not a folder); missing ones are fine (they are made when written)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.close(_open_folder(inside, (name,), create=False))


@contextlib.contextmanager
def atomic_path(path: Path, *, inside: Path | None = None) -> Iterator[Path]:
    """A temporary path beside `path`'s target, renamed onto it only if the block succeeds.

    With `inside` (the results folder `path` lies in) no link is followed: see the module's
    docstring; the path yielded may then be ``/proc/self/fd/N``, so a writer that guesses
    the format from the file's suffix must be told the format.

    Without it (a path the user named), a symlink is written through: its resolved target is
    replaced (atomically, in the target's folder) and the link stays. A new file gets the mode
    an ordinary `open()` would give it; a replaced file keeps its mode. `UserError` if the
    target exists and is not a regular file (a folder, a FIFO, a device such as /dev/null),
    since renaming over it would replace the node rather than write to it.
    """
    if inside is not None:
        with _confined(Path(path), Path(inside)) as through:
            yield through
        return
    target = Path(os.path.realpath(path))
    try:
        info = target.stat()
    except FileNotFoundError:
        mode = new_file_mode()
    else:
        if not stat.S_ISREG(info.st_mode):
            named = str(path) if target == Path(path) else f"{path} (-> {target})"
            raise UserError(f"{named}: exists and is not a regular file; write to a file path")
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
