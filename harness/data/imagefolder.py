"""Which images an ImageNet-style folder holds: the layout, labels, and the unreadable files.

Accepted layout, under one root folder::

    ROOT/train/<wnid>/*.JPEG            one folder per class; the sorted folder names are the
                                        classes (label i = i-th name), as torchvision's
                                        ImageFolder and every ImageNet script do
    ROOT/val/<wnid>/*.JPEG              the same per-class layout, or
    ROOT/val/*.JPEG                     flat, with labels in one of (looked for in val/, then
                                        in ROOT):
      val_labels.txt                    one "FILENAME WNID" per line (whitespace-separated)
      LOC_val_solution.csv              Kaggle's: header "ImageId,PredictionString", then
                                        "ILSVRC2012_val_00000001,n01751748 x0 y0 x1 y1 ..."

Image files end in .jpeg, .jpg or .png (any case). Reading pixels is elsewhere
(harness.data.image_transforms); this module only decides which files are the dataset, so that
N is known before training: every image is opened (header only, by default) while scanning,
and an unreadable one is counted and left out with a warning; so is one of more than
``max_pixels`` pixels (``execution.max_image_pixels``, default Pillow's 89,478,485: an image
Pillow would decode with only a warning, at gigabytes of memory). The training-set size N
that schedules and update counts use is the number of images kept, ``ImageList.n``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from harness.core.execution import DEFAULT_MAX_IMAGE_PIXELS
from harness.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})
VAL_LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv")
Split = Literal["train", "val"]
Check = Literal["none", "header", "decode"]

_LAYOUT_HINT = (
    "expected ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG "
    "(or a flat ROOT/val/ with val_labels.txt or LOC_val_solution.csv)"
)


@dataclass(frozen=True, eq=False)
class ImageList:
    """The images of one split that the dataset uses, in a fixed (sorted) order.

    ``paths`` are relative to ``folder`` and held as one numpy bytes array rather than a list
    of str: DataLoader workers fork this object, and a million Python strings would be
    copied page by page as their reference counts change.
    """

    split: str
    folder: Path
    paths: np.ndarray  # (N,) bytes ('S' dtype), UTF-8 paths relative to folder
    labels: np.ndarray  # (N,) int64 in 0..len(classes)-1
    classes: tuple[str, ...]  # wnids; label i is classes[i]
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of files left out

    @property
    def n(self) -> int:
        """Images actually used (after skipping): the N of the noise scale and update counts."""
        return int(self.labels.shape[0])

    def path(self, index: int) -> Path:
        return self.folder / self.paths[index].decode()


def image_classes(root: Path) -> tuple[str, ...]:
    """The class names (wnids): sorted sub-folders of ROOT/train, else of ROOT/val."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder; {_LAYOUT_HINT}")
    for split in ("train", "val"):
        folder = root / split
        if folder.is_dir():
            classes = _subfolders(folder)
            if classes:
                return tuple(classes)
    raise UserError(f"{root}: no class folders in train/ (or val/); {_LAYOUT_HINT}")


def scan_split(
    root: Path,
    split: Split,
    *,
    classes: tuple[str, ...] | None = None,
    check: Check = "header",
    threads: int = 8,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ImageList:
    """List the images of ``split`` under ``root`` with their labels; skip unreadable files.

    ``classes`` fixes the label of each wnid (default: :func:`image_classes`, so train and val
    agree). ``check``: "header" opens each file and parses its header (fast; catches empty,
    non-image and cut-off-header files), "decode" decodes every image fully (slow; catches
    truncated data too), "none" trusts the file names. "header" and "decode" also skip an image
    of more than ``max_pixels`` pixels (before decoding it). Each skipped file is counted in
    ``skipped`` and reported in one warning. A missing folder, an empty split, or a
    malformed labels file raises a one-line :class:`UserError`.
    """
    root = Path(root)
    if classes is None:
        classes = image_classes(root)
    folder = root / split
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; {_LAYOUT_HINT}")
    index = {wnid: i for i, wnid in enumerate(classes)}
    subfolders = _subfolders(folder)
    skipped: list[tuple[str, str]] = []
    if subfolders:
        unknown = [s for s in subfolders if s not in index]
        if unknown:
            raise UserError(
                f"{folder / unknown[0]}: class folder not among the {len(classes)} classes of "
                f"{root / 'train'} ({len(unknown)} such folders)"
            )
        pairs = []
        for wnid in subfolders:
            names, unusable = _image_files(folder / wnid)
            pairs += [(f"{wnid}/{name}", index[wnid]) for name in names]
            skipped += [(f"{wnid}/{name}", why) for name, why in unusable]
    else:
        pairs, unlabelled, unusable = _flat_with_labels(root, folder, index)
        skipped += [(name, "no label in the labels file") for name in unlabelled] + unusable
    if check != "none":
        bad = _unreadable(folder, [p for p, _ in pairs], check, threads, max_pixels)
        if bad:
            skipped += sorted(bad.items())
            pairs = [(p, y) for p, y in pairs if p not in bad]
    if not pairs:
        raise UserError(f"{folder}: no readable .JPEG/.jpg/.png images; {_LAYOUT_HINT}")
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(
            f"{folder}: skipped {len(skipped)} of {len(pairs) + len(skipped)} images, "
            f"using N = {len(pairs)}: {shown}{more}",
            stacklevel=2,
        )
    paths = np.array([p.encode() for p, _ in pairs], dtype=np.bytes_)
    labels = np.array([y for _, y in pairs], dtype=np.int64)
    return ImageList(split, folder, paths, labels, tuple(classes), tuple(skipped))


def _subfolders(folder: Path) -> list[str]:
    """The class folders: sub-folders not starting with "."; a name that is not UTF-8 is
    refused (it is a class, and dropping it would renumber the labels)."""
    names = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not _is(e.is_dir):
                continue
            if _not_utf8(e.name):
                raise UserError(
                    f"{folder / printable(e.name)}: a class folder whose name is not UTF-8; "
                    "rename it"
                )
            names.append(e.name)
    return sorted(names)


def _image_files(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The image files of `folder` (sorted), and those that cannot be used, with why: a link
    that cannot be followed (a loop, ELOOP) or a name that is not UTF-8 (the dataset holds
    paths as UTF-8). Both are counted as skipped, as an unreadable image is."""
    names: list[str] = []
    bad: list[tuple[str, str]] = []
    with os.scandir(folder) as it:
        for e in it:
            if os.path.splitext(e.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            if _not_utf8(e.name):
                bad.append((printable(e.name), "file name is not UTF-8"))
                continue
            try:
                if e.is_file():
                    names.append(e.name)
            except OSError as exc:  # a self-referencing link: ELOOP
                bad.append((e.name, exc.strerror or type(exc).__name__))
    return sorted(names), sorted(bad)


def _is(test: Callable[[], bool]) -> bool:
    """`DirEntry.is_dir()`'s answer; False where following the entry fails (a link loop)."""
    try:
        return test()
    except OSError:
        return False


def _not_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir gave undecodable bytes as surrogates
        return True
    return False


def printable(name: str) -> str:
    """A file name as text that any terminal and log can take: undecodable bytes as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _flat_with_labels(
    root: Path, folder: Path, index: dict[str, int]
) -> tuple[list[tuple[str, int]], list[str], list[tuple[str, str]]]:
    """A flat val/ folder: (file, label) pairs from its labels file, files with no label, and
    files that cannot be used (`_image_files`)."""
    label_file = next(
        (d / name for d in (folder, root) for name in VAL_LABEL_FILES if (d / name).is_file()),
        None,
    )
    if label_file is None:
        raise UserError(
            f"{folder}: images are not in class folders and no labels file was found "
            f"({' or '.join(VAL_LABEL_FILES)} in {folder} or {root})"
        )
    by_stem = _read_labels(label_file)
    pairs: list[tuple[str, int]] = []
    unlabelled: list[str] = []
    names, bad = _image_files(folder)
    for name in names:
        wnid = by_stem.get(name) or by_stem.get(os.path.splitext(name)[0])
        if wnid is None:
            unlabelled.append(name)
            continue
        if wnid not in index:
            raise UserError(f"{label_file}: {name} has class {wnid!r}, not a known class")
        pairs.append((name, index[wnid]))
    return pairs, unlabelled, bad


def _read_labels(path: Path) -> dict[str, str]:
    """File name (or stem) → wnid, from either accepted labels format."""
    labels: dict[str, str] = {}
    try:
        with path.open(newline="") as f:
            if path.suffix == ".csv":
                rows: Iterable[list[str]] = csv.reader(f)
                header = next(iter(rows), None)
                if header is None or [h.strip() for h in header[:2]] != [
                    "ImageId",
                    "PredictionString",
                ]:
                    raise UserError(f"{path}: expected the header 'ImageId,PredictionString'")
                for line, row in enumerate(rows, start=2):
                    if len(row) < 2 or not row[1].split():
                        raise UserError(f"{path}:{line}: expected 'ImageId,WNID ...'")
                    labels[row[0].strip()] = row[1].split()[0]
            else:
                for line, text in enumerate(f, start=1):
                    fields = text.split()
                    if not fields:
                        continue
                    if len(fields) != 2:
                        raise UserError(f"{path}:{line}: expected 'FILENAME WNID'")
                    labels[fields[0]] = fields[1]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the labels file ({e})") from None
    return labels


def too_large(width: int, height: int, max_pixels: int) -> str | None:
    """Why an image of this size is not decoded, or None: the one wording of the limit."""
    if width * height <= max_pixels:
        return None
    return (
        f"{width}x{height} = {width * height} pixels, over execution.max_image_pixels "
        f"({max_pixels})"
    )


def _unreadable(
    folder: Path, paths: list[str], check: Check, threads: int, max_pixels: int
) -> dict[str, str]:
    """Path → reason for each file Pillow cannot open (or, with "decode", fully decode), and
    each image over `max_pixels` (not decoded)."""
    # Pillow is imported here so that importing harness.data stays cheap for the CIFAR path.
    from PIL import Image

    def probe(rel: str) -> str | None:
        try:
            with Image.open(folder / rel) as img:
                big = too_large(img.width, img.height, max_pixels)
                if big is not None:
                    return big
                if check == "decode":
                    img.load()
                elif img.width < 1 or img.height < 1:
                    return "empty image"
        except Exception as e:  # Pillow raises many types for bad files; all mean "skip it"
            return f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return None

    # Opening files is I/O-bound and Pillow's decoder releases the GIL: threads suffice. The
    # limit above is the one that counts: Pillow's warning on opening a large image is muted.
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        reasons = list(pool.map(probe, paths))
    return {p: r for p, r in zip(paths, reasons) if r is not None}
