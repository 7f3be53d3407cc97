"""CIFAR-10 and CIFAR-100 on the host: the python batch files read safely, subsets, and which
copy it is.

Reading is separate from where the data then lives (harness.data.device) and from fetching it
(harness.data.download), so a loader for another dataset plugs in beside this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.labels import LabelError, class_labels
from harness.data.request import LoadRequest
from harness.data.safe_pickle import read_batch
from harness.errors import UserError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
# md5 of the official test_batch file (as torchvision checks it): tells an official copy apart.
OFFICIAL_TEST_MD5 = "40351d587109b95175f43aff81a1287e"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (3, 32, 32)
PAD = 4

# CIFAR-100 (the same 32x32 images, 100 fine classes): one training file and one test file
# in cifar-100-python/, labels under "fine_labels" (its 20 coarse labels are not used).
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CIFAR100_TEST_MD5 = "f0ef6b0ae62326f3e7ffdfab6717acfc"  # of the official `test` file
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_CLASSES = 100

_DOWNLOAD_HINT = "download CIFAR-10 with `harness data cifar10 DIR`"
_DOWNLOAD_HINT_100 = "download CIFAR-100 with `harness data cifar100 DIR`"


def _read_images(
    path: Path,
    label_key: str = "labels",
    classes: int = len(CLASSES),
    what: str = "CIFAR-10",
    hint: str = _DOWNLOAD_HINT,
) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path, hint)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise UserError(f"{path}: not a {what} batch file ('data' is not a uint8 matrix)")
    if data.shape[1] != int(np.prod(IMAGE_SHAPE)) or labels is None:
        raise UserError(
            f"{path}: not a {what} batch file ('data' has shape {data.shape}"
            f"{', no ' + repr(label_key) if labels is None else ''})"
        )
    try:
        y = class_labels(labels, len(data), classes)
    except LabelError as exc:
        raise UserError(
            f"{path}: '{label_key}' holds {exc.reason}; a {what} batch file's labels are "
            f"integers 0..{classes - 1}, one per image ({hint})"
        ) from None
    return data.reshape(-1, *IMAGE_SHAPE), y


@dataclass(frozen=True, eq=False)
class Cifar10:
    """CIFAR-10 (or CIFAR-100) on the host: images (N, 3, 32, 32) uint8 RGB, labels (N,) int64
    in 0..classes-1."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


@dataclass(frozen=True, eq=False)
class HostData:
    """What a kind held on the device reads (harness.data.registry puts it there): its host
    arrays, which copy it is (the run row's `data_source`), and the per-channel mean and std
    to normalize by (None: the training images')."""

    arrays: Cifar10
    source: str
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


def _batches_folder(root: Path) -> Path:
    # Accept both the folder that holds cifar-10-batches-py/ and that folder itself.
    nested = root / FOLDER
    if nested.is_dir():
        return nested
    if (root / TRAIN_FILES[0]).is_file():
        return root
    return nested


def _read_split(
    folder: Path,
    files: tuple[str, ...],
    size: int | None,
    field: str,
    read: Callable[[Path], tuple[np.ndarray, np.ndarray]] = _read_images,
) -> tuple[np.ndarray, np.ndarray]:
    # Reads only as many files as the first `size` examples need.
    if size is not None and size < 0:
        raise UserError(f"{field}: {size} must be >= 0")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    have = 0
    for name in files:
        if size is not None and have >= size and xs:
            break
        x, y = read(folder / name)
        xs.append(x)
        ys.append(y)
        have += len(y)
    if size is not None and size > have:
        raise UserError(
            f"{field}: {size} is more than the {have} examples in {folder}; "
            f"use at most {have} (or leave it unset for all)"
        )
    x_all = np.concatenate(xs) if len(xs) != 1 else xs[0]
    y_all = np.concatenate(ys) if len(ys) != 1 else ys[0]
    if size is not None:
        x_all, y_all = x_all[:size], y_all[:size]
    return np.ascontiguousarray(x_all), np.ascontiguousarray(y_all)


def cifar10_source(root: Path) -> str:
    """Which copy of CIFAR-10 is under ``root``: recorded in every run row.

    "official" when test_batch has the official md5; "jpeg-derived" for the lossy copy that
    a JPEG pack's unpack.py rebuilds (.ci/run uses one; it leaves a SHA256SUMS file beside the
    batches); otherwise "unverified" (pixels not known to be the official ones).
    """
    folder = _batches_folder(root)
    try:
        digest = hashlib.md5((folder / TEST_FILE).read_bytes(), usedforsecurity=False)
    except OSError:
        return "unverified"
    if digest.hexdigest() == OFFICIAL_TEST_MD5:
        return "official"
    return "jpeg-derived" if (folder / "SHA256SUMS").is_file() else "unverified"


def load_cifar10(
    root: Path, train_size: int | None = None, test_size: int | None = None
) -> Cifar10:
    """Load CIFAR-10 from ``root`` (the folder holding ``cifar-10-batches-py/``, or it itself).

    ``train_size`` / ``test_size`` keep the first n examples of each split, in file order.
    """
    folder = _batches_folder(Path(root))
    if not folder.is_dir():
        raise UserError(
            f"{folder}: no such folder; point --data (or HARNESS_DATA) at the folder that "
            f"holds cifar-10-batches-py, or {_DOWNLOAD_HINT}"
        )
    for name in (*TRAIN_FILES, TEST_FILE):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: no such file; {_DOWNLOAD_HINT}")
    train_x, train_y = _read_split(folder, TRAIN_FILES, train_size, "dataset.train_size")
    test_x, test_y = _read_split(folder, (TEST_FILE,), test_size, "dataset.test_size")
    classes = list(CLASSES)
    if (folder / META_FILE).is_file():
        names = read_batch(folder / META_FILE, _DOWNLOAD_HINT).get("label_names")
        if isinstance(names, list) and len(names) == len(CLASSES):
            classes = [str(n) for n in names]
    return Cifar10(train_x, train_y, test_x, test_y, classes)


def _cifar100_folder(root: Path) -> Path:
    nested = root / CIFAR100_FOLDER
    if nested.is_dir() or not (root / "train").is_file():
        return nested
    return root  # the folder itself


def cifar100_source(root: Path) -> str:
    """As `cifar10_source`, for CIFAR-100: "official" when its test file has the official
    md5, else "unverified"."""
    try:
        data = (_cifar100_folder(root) / "test").read_bytes()
    except OSError:
        return "unverified"
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return "official" if digest == CIFAR100_TEST_MD5 else "unverified"


def load_cifar100(
    root: Path, train_size: int | None = None, test_size: int | None = None
) -> Cifar10:
    """Load CIFAR-100 from ``root`` (the folder holding ``cifar-100-python/``, or it itself):
    its 100 fine labels; ``train_size`` / ``test_size`` keep the first n of each split."""
    folder = _cifar100_folder(Path(root))
    if not folder.is_dir():
        raise UserError(
            f"{folder}: no such folder; point --data (or HARNESS_DATA) at the folder that "
            f"holds cifar-100-python, or {_DOWNLOAD_HINT_100}"
        )
    for name in ("train", "test"):
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: no such file; {_DOWNLOAD_HINT_100}")

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        return _read_images(path, "fine_labels", CIFAR100_CLASSES, "CIFAR-100", _DOWNLOAD_HINT_100)

    train_x, train_y = _read_split(folder, ("train",), train_size, "dataset.train_size", read)
    test_x, test_y = _read_split(folder, ("test",), test_size, "dataset.test_size", read)
    classes = [str(i) for i in range(CIFAR100_CLASSES)]
    if (folder / "meta").is_file():
        names = read_batch(folder / "meta", _DOWNLOAD_HINT_100).get("fine_label_names")
        if isinstance(names, list) and len(names) == CIFAR100_CLASSES:
            classes = [str(n) for n in names]
    return Cifar10(train_x, train_y, test_x, test_y, classes)


def synthetic_cifar10(train_size: int, test_size: int, seed: int) -> Cifar10:
    """Random CIFAR-10-shaped data for unit tests; the class is learnable from the colour.

    Each class has its own mean colour and a class-dependent stripe pattern; pixels add
    uniform noise, so images are distinct and crops of them are unambiguous.
    """
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    colours = rng.uniform(50, 205, size=(k, 3, 1, 1))
    rows = np.arange(32).reshape(1, 1, 32, 1)
    stripes = 30 * np.sin(rows * (np.arange(k).reshape(k, 1, 1, 1) + 1) * np.pi / 16)

    base = (colours + stripes).round().astype(np.int16)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, k, size=n).astype(np.int64)
        noise = rng.integers(-40, 41, size=(n, *IMAGE_SHAPE), dtype=np.int16)
        x = np.clip(base[y] + noise, 0, 255).astype(np.uint8)
        return x, y

    train_x, train_y = split(train_size)
    test_x, test_y = split(test_size)
    return Cifar10(train_x, train_y, test_x, test_y, list(CLASSES))


def read_cifar10(request: LoadRequest) -> HostData:
    """The `cifar10` kind: the first train_size / test_size examples under --data."""
    root = request.root
    spec = request.spec
    return HostData(load_cifar10(root, spec.train_size, spec.test_size), cifar10_source(root))


def read_cifar100(request: LoadRequest) -> HostData:
    """The `cifar100` kind, as `read_cifar10`."""
    root = request.root
    spec = request.spec
    return HostData(load_cifar100(root, spec.train_size, spec.test_size), cifar100_source(root))


def read_synthetic(request: LoadRequest) -> HostData:
    """The `synthetic` kind: `synthetic_cifar10` of the suite's sizes (its config needs both)."""
    spec = request.spec
    assert spec.train_size is not None and spec.test_size is not None
    return HostData(synthetic_cifar10(spec.train_size, spec.test_size, seed=0), "synthetic")
