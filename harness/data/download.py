"""Fetching the official CIFAR-10 and CIFAR-100 tarballs: streamed, md5-checked, extracted
atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from harness.data.cifar10 import (
    CIFAR100_FOLDER,
    CIFAR100_MD5,
    CIFAR100_URL,
    FOLDER,
    OFFICIAL_MD5,
    OFFICIAL_URL,
    load_cifar10,
    load_cifar100,
)
from harness.errors import UserError


@dataclass(frozen=True)
class _Dataset:
    name: str  # in messages
    folder: str  # the one folder the archive holds
    load: Callable[[Path], Any]  # raises UserError unless the folder holds the dataset


CIFAR10 = _Dataset("CIFAR-10", FOLDER, load_cifar10)
CIFAR100 = _Dataset("CIFAR-100", CIFAR100_FOLDER, load_cifar100)


def _loads(folder: Path, dataset: _Dataset) -> bool:
    try:
        dataset.load(folder)
    except UserError:
        return False
    return True


def _fetch(url: str, out: BinaryIO, name: str) -> str:
    """Stream ``url`` into ``out`` with a progress line on stderr; return the md5 hex digest."""
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            last = 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                now = time.monotonic()
                if now - last > 0.5:
                    last = now
                    of = f" / {total / 2**20:.1f}" if total else ""
                    sys.stderr.write(f"\rdownloading {name}: {done / 2**20:.1f}{of} MiB")
                    sys.stderr.flush()
            sys.stderr.write(f"\rdownloaded {name}: {done / 2**20:.1f} MiB\n")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"download of {url} failed: {reason}".replace("\n", " ")) from None
    return md5.hexdigest()


def _safe_members(tar: tarfile.TarFile, archive: str, folder: str) -> list[tarfile.TarInfo]:
    # Only regular files directly under the dataset's folder; anything that could escape the
    # extraction folder is an error rather than silently skipped.
    members = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise UserError(f"{archive}: unsafe path {m.name!r} in the archive; not extracting")
        if m.isfile() and len(p.parts) == 2 and p.parts[0] == folder:
            members.append(m)
    if not members:
        raise UserError(f"{archive}: no {folder}/ files in the archive")
    return members


def download_cifar10(dest: Path, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> Path:
    """Download, verify and extract CIFAR-10 into ``dest/cifar-10-batches-py``; return it.

    Does nothing when that folder already loads. The folder appears atomically (extracted to
    a temporary folder in ``dest``, then renamed), so an interrupted run leaves no half copy.
    """
    return _download(dest, url, md5, CIFAR10)


def download_cifar100(dest: Path, url: str = CIFAR100_URL, md5: str = CIFAR100_MD5) -> Path:
    """As `download_cifar10`, for CIFAR-100 into ``dest/cifar-100-python``."""
    return _download(dest, url, md5, CIFAR100)


def _download(dest: Path, url: str, md5: str, dataset: _Dataset) -> Path:
    dest = Path(dest).expanduser()
    final = dest / dataset.folder
    if final.exists():
        if _loads(final, dataset):
            return final
        raise UserError(
            f"{final}: exists but does not load as {dataset.name}; move it away and run again"
        )
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder; pass a folder to download into")
    created = not dest.exists()
    archive = url.rsplit("/", 1)[-1] or f"{dataset.folder}.tar.gz"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{archive}.", suffix=".part")
    except OSError as exc:
        raise UserError(
            f"{dest}: cannot write there ({exc.strerror or exc}); pass a folder you can write"
        ) from None
    tmp_file = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, archive)
        if got != md5.lower():
            raise UserError(
                f"{url}: md5 {got} does not match the expected {md5}; "
                f"the download is corrupt or not the {dataset.name} python tarball"
            )
        tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=f".{dataset.folder}-extract."))
        try:
            with tarfile.open(tmp_file, "r:gz") as tar:
                members = _safe_members(tar, archive, dataset.folder)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp_dir, members=members, filter="data")
                else:  # Python without PEP 706; the members were checked above
                    tar.extractall(tmp_dir, members=members)
        except tarfile.TarError as e:
            raise UserError(f"{archive}: not a readable tar.gz archive ({e})") from None
        dataset.load(tmp_dir / dataset.folder)
        os.rename(tmp_dir / dataset.folder, final)
    finally:
        tmp_file.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not final.exists():
            with contextlib.suppress(OSError):
                dest.rmdir()
    return final
