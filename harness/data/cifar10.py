"""CIFAR-10: safe loading from the python batch files, download, and device-resident batching.

The whole training set lives on the device as uint8, reflection-padded once; augmentation
(random 32x32 crop of the padded image, horizontal flip), normalization and batching are tensor
ops there, with no DataLoader and no host sync per step. Every random draw comes from a
``torch.Generator`` passed in by the caller, so the augmentation stream is separate from the
init and data-order streams (see DESIGN.md, "Comparisons between cells").
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

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

_DOWNLOAD_HINT = "download CIFAR-10 with `harness data cifar10 DIR`"


# --- safe unpickling -----------------------------------------------------------------------


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # The official batch files (written by Python 2 numpy) reference exactly these three
    # globals; numpy >= 2 pickles the same function under ``numpy._core``. Anything else could
    # run arbitrary code on load, so it is refused.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR-10 batch files: only the numpy globals an ndarray needs resolve."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file, encoding="latin1")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UserError(
                f"{self._name}: refusing to unpickle global '{module}.{name}': "
                "not a CIFAR-10 batch file"
            ) from None


def read_batch(path: Path) -> dict[str, Any]:
    """One batch (or ``batches.meta``) file as a dict with ``str`` keys, loaded safely."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, str(path)).load()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; {_DOWNLOAD_HINT}") from None
    except UserError:
        raise
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise UserError(
            f"{path}: not a CIFAR-10 batch file ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR-10 batch file (holds {type(obj).__name__})")
    return obj


def _read_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise UserError(f"{path}: not a CIFAR-10 batch file ('data' is not a uint8 matrix)")
    if data.shape[1] != int(np.prod(IMAGE_SHAPE)) or labels is None or len(labels) != len(data):
        raise UserError(
            f"{path}: not a CIFAR-10 batch file ('data' has shape {data.shape}, "
            f"{'no' if labels is None else len(labels)} labels)"
        )
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise UserError(f"{path}: labels outside 0..9")
    return data.reshape(-1, *IMAGE_SHAPE), y


# --- the dataset on the host ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Cifar10:
    """CIFAR-10 on the host: images (N, 3, 32, 32) uint8 RGB, labels (N,) int64 in 0..9."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


def resolve_data_root(value: str | Path | None) -> Path:
    """The data folder: the ``--data`` value if given, else ``$HARNESS_DATA``."""
    if value is not None and str(value) != "":
        return Path(value).expanduser()
    env = os.environ.get("HARNESS_DATA", "")
    if env:
        return Path(env).expanduser()
    raise UserError(
        "no data folder: pass --data DIR or set HARNESS_DATA=DIR "
        "(download CIFAR-10 with `harness data cifar10 DIR`)"
    )


def _batches_folder(root: Path) -> Path:
    # Accept both the folder that holds cifar-10-batches-py/ and that folder itself.
    nested = root / FOLDER
    if nested.is_dir():
        return nested
    if (root / TRAIN_FILES[0]).is_file():
        return root
    return nested


def _read_split(
    folder: Path, files: tuple[str, ...], size: int | None, field: str
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
        x, y = _read_images(folder / name)
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
    ../shared/data/cifar10/jpeg/unpack.py rebuilds (it leaves a SHA256SUMS file beside the
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
        names = read_batch(folder / META_FILE).get("label_names")
        if isinstance(names, list) and len(names) == len(CLASSES):
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


# --- download --------------------------------------------------------------------------------


def _loads(folder: Path) -> bool:
    try:
        load_cifar10(folder)
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


def _safe_members(tar: tarfile.TarFile, archive: str) -> list[tarfile.TarInfo]:
    # Only regular files directly under cifar-10-batches-py/; anything that could escape the
    # extraction folder is an error rather than silently skipped.
    members = []
    for m in tar.getmembers():
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise UserError(f"{archive}: unsafe path {m.name!r} in the archive; not extracting")
        if m.isfile() and len(p.parts) == 2 and p.parts[0] == FOLDER:
            members.append(m)
    if not members:
        raise UserError(f"{archive}: no {FOLDER}/ files in the archive")
    return members


def download_cifar10(dest: Path, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> Path:
    """Download, verify and extract CIFAR-10 into ``dest/cifar-10-batches-py``; return it.

    Does nothing when that folder already loads. The folder appears atomically (extracted to
    a temporary folder in ``dest``, then renamed), so an interrupted run leaves no half copy.
    """
    dest = Path(dest).expanduser()
    final = dest / FOLDER
    if final.exists():
        if _loads(final):
            return final
        raise UserError(
            f"{final}: exists but does not load as CIFAR-10; move it away and run again"
        )
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    archive = url.rsplit("/", 1)[-1] or "cifar-10-python.tar.gz"
    fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{archive}.", suffix=".part")
    tmp_file = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, archive)
        if got != md5.lower():
            raise UserError(
                f"{url}: md5 {got} does not match the expected {md5}; "
                "the download is corrupt or not the CIFAR-10 python tarball"
            )
        tmp_dir = Path(tempfile.mkdtemp(dir=dest, prefix=".cifar-10-extract."))
        try:
            with tarfile.open(tmp_file, "r:gz") as tar:
                members = _safe_members(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp_dir, members=members, filter="data")
                else:  # Python without PEP 706; the members were checked above
                    tar.extractall(tmp_dir, members=members)
        except tarfile.TarError as e:
            raise UserError(f"{archive}: not a readable tar.gz archive ({e})") from None
        load_cifar10(tmp_dir / FOLDER)
        os.rename(tmp_dir / FOLDER, final)
    finally:
        tmp_file.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not final.exists():
            with contextlib.suppress(OSError):
                dest.rmdir()
    return final


# --- on the device ---------------------------------------------------------------------------


def random_crop_flip(
    padded: Tensor, indices: Tensor, generator: torch.Generator, crop: int = 32
) -> Tensor:
    """A random ``crop`` x ``crop`` window of each ``padded[indices]``, flipped with p = 0.5.

    ``padded`` is (N, C, H, W) of any dtype, which the result keeps: (B, C, crop, crop).
    Offsets are uniform in 0..H-crop and 0..W-crop, drawn per example from ``generator``
    (same device as ``padded``); crop and flip are one gather, so nothing loops over examples
    and nothing syncs with the host. ``padded`` must be contiguous (NCHW).
    """
    if not padded.is_contiguous():
        raise ValueError("random_crop_flip: padded must be a contiguous NCHW tensor")
    device = padded.device
    b = indices.shape[0]
    _, c, h, w = padded.shape
    dy = torch.randint(0, h - crop + 1, (b, 1), generator=generator, device=device)
    dx = torch.randint(0, w - crop + 1, (b, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (b, 1), generator=generator, device=device).bool()
    ar = torch.arange(crop, device=device)
    rows = dy + ar
    cols = torch.where(flip, dx + (crop - 1) - ar, dx + ar)
    # One flat index into the storage: on CPU about twice as fast as 4-way advanced indexing.
    offsets = (
        indices.view(b, 1, 1, 1) * (c * h * w)
        + torch.arange(c, device=device).view(1, c, 1, 1) * (h * w)
        + rows.view(b, 1, crop, 1) * w
        + cols.view(b, 1, 1, crop)
    )
    return padded.view(-1)[offsets]


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Exact per-channel mean/std in [0, 1] units from a 256-bin histogram: no float copy of
    # the whole training set.
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = np.empty(x.shape[1])
    std = np.empty(x.shape[1])
    for ch in range(x.shape[1]):
        counts = np.bincount(x[:, ch].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean[ch] = counts @ levels / n
        std[ch] = np.sqrt(max(counts @ (levels - mean[ch]) ** 2 / n, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


class DeviceData:
    """CIFAR-10 resident on one device: padded uint8 train set, uint8 test set, int64 labels.

    ``mean`` / ``std`` are per-channel float32 statistics (pixel values in [0, 1]) of the
    training images in use; ``normalize`` maps uint8 images to float32 with them.
    """

    def __init__(
        self,
        train_padded: Tensor,
        train_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        mean: Tensor,
        std: Tensor,
        channels_last: bool = False,
        augment: bool = True,
    ) -> None:
        self.train_padded = train_padded
        self.augment = augment
        self.train_y = train_y
        self.test_x = test_x
        self.test_y = test_y
        self.mean = mean
        self.std = std
        self.channels_last = channels_last
        # Folded into one multiply-add on uint8 values: (x - 255 mean) / (255 std).
        self._shift = (mean * 255.0).view(1, -1, 1, 1)
        self._scale = (1.0 / (std * 255.0)).view(1, -1, 1, 1)

    @classmethod
    def from_arrays(
        cls, ds: Cifar10, device: torch.device, channels_last: bool = False, augment: bool = True
    ) -> DeviceData:
        """Move ``ds`` to ``device``; the train set is reflection-padded by 4 pixels once."""
        if len(ds.train_y) == 0:
            raise UserError("dataset.train_size: the training split is empty")
        pad = ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD))
        padded = np.pad(ds.train_x, pad, mode="reflect")
        mean, std = _channel_stats(ds.train_x)
        return cls(
            train_padded=torch.from_numpy(padded).to(device),
            train_y=torch.from_numpy(ds.train_y.astype(np.int64)).to(device),
            test_x=torch.from_numpy(np.ascontiguousarray(ds.test_x)).to(device),
            test_y=torch.from_numpy(ds.test_y.astype(np.int64)).to(device),
            mean=torch.from_numpy(mean).to(device),
            std=torch.from_numpy(std).to(device),
            channels_last=channels_last,
            augment=augment,
        )

    @property
    def device(self) -> torch.device:
        return self.train_padded.device

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_y.shape[0])

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 images (B, 3, H, W) → float32, per-channel zero mean / unit std on train."""
        out = x.float().sub_(self._shift).mul_(self._scale)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def train_images(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented uint8 images (B, 3, 32, 32) and labels (B,) int64, not yet normalized.

        ``indices``: 1-D int64 on this device (a slice of an epoch permutation).
        ``generator``: on this device; the only source of augmentation randomness, drawn once
        for the whole batch (so micro-batching a step does not change its augmentation).
        Without augmentation the images are the padded ones' centres.
        """
        if not self.augment:
            return self.train_padded[indices, :, PAD:-PAD, PAD:-PAD], self.train_y[indices]
        x = random_crop_flip(self.train_padded, indices, generator, crop=IMAGE_SHAPE[-1])
        return x, self.train_y[indices]

    def train_batch(self, indices: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Augmented, normalized images (B, 3, 32, 32) float32 and labels (B,) int64."""
        x, y = self.train_images(indices, generator)
        return self.normalize(x), y

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The test set in order, normalized and un-augmented; the last batch may be short."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, self.n_test, batch_size):
            end = start + batch_size
            yield self.normalize(self.test_x[start:end]), self.test_y[start:end]
