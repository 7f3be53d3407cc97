"""The user's own images as a dataset: an .npz of train_x, train_y, test_x, test_y.

Read with ``allow_pickle=False`` (an object array is refused, never unpickled), checked, and
handed on as the CIFAR-10 host arrays (`Cifar10`) that `DeviceData` holds on the device. Images
are uint8, (N, C, H, W) or (N, H, W, C): a last axis of 1, 3 or 4 channels with a second axis
of more is channels-last, anything else channels-first. Labels are integers in
0..classes-1. Every mistake is one line naming the suite field (`dataset.path`,
`dataset.classes`, `dataset.train_size`, ...) and the fix.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from harness.data.cifar10 import Cifar10, HostData
from harness.data.labels import LabelError, class_labels
from harness.data.request import LoadRequest
from harness.errors import UserError

KEYS = ("train_x", "train_y", "test_x", "test_y")
_CHANNELS = (1, 3, 4)


def read_arrays(request: LoadRequest) -> HostData:
    """The `arrays` kind: the suite's .npz (`dataset.path`), normalized by its `mean` / `std`
    when given (its config needs path, classes and train_size)."""
    spec = request.spec
    assert spec.path is not None and spec.classes is not None and spec.train_size is not None
    path = Path(spec.path).expanduser()
    arrays = load_arrays(
        path,
        classes=spec.classes,
        train_size=spec.train_size,
        test_size=spec.test_size,
        channels=None if spec.mean is None else len(spec.mean),
        takes=request.takes,
    )
    stats = None if spec.mean is None or spec.std is None else (spec.mean, spec.std)
    return HostData(arrays, arrays_source(path), stats)


def load_arrays(
    path: Path,
    *,
    classes: int,
    train_size: int,
    test_size: int | None = None,
    channels: int | None = None,
    takes: tuple[int, str] | None = None,
) -> Cifar10:
    """The first `train_size` training and `test_size` test examples of the .npz at `path`.

    `channels`: the number the suite's mean/std give, if it gives them. `takes`: the channels
    the suite's models take and which model that is, if known. Each member's .npy header is
    read and checked (dtype, declared shape against the bytes the member holds, channels)
    before any array data is read.
    """
    where = f"dataset.path: {path}"
    if not path.is_file():
        raise UserError(f"{where}: no such file; give the .npz holding {', '.join(KEYS)}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{where}: not an .npz (a zip of .npy arrays); write it with np.savez")
    shapes = _headers(path, where)
    for key in ("train_x", "test_x"):
        c = _layout(shapes[key], key, where)[1]
        if takes is not None and c != takes[0]:
            raise UserError(
                f"{where}: {key} images have {c} channel(s), but model {takes[1]} takes "
                f"{takes[0]}; give (N, {takes[0]}, H, W) or (N, H, W, {takes[0]}) images"
            )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in KEYS}
    except ValueError as exc:  # object arrays are refused above, by their header
        raise UserError(f"{where}: not a readable .npz ({exc}); write it with np.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise UserError(f"{where}: not a readable .npz ({exc}); write it with np.savez") from None
    train_x = _images(arrays["train_x"], "train_x", where)
    test_x = _images(arrays["test_x"], "test_x", where)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(
            f"{where}: train_x images are {_shape(train_x)} but test_x's are {_shape(test_x)}; "
            "give both splits one image shape"
        )
    if channels is not None and train_x.shape[1] != channels:
        raise UserError(
            f"dataset.mean: {channels} values for images of {train_x.shape[1]} channels; give "
            "one per channel"
        )
    train_y = _labels(arrays["train_y"], "train_y", len(train_x), classes, where)
    test_y = _labels(arrays["test_y"], "test_y", len(test_x), classes, where)
    if train_size > len(train_x):
        raise UserError(
            f"dataset.train_size: {train_size}, but {path} holds {len(train_x)} training "
            f"images; pass --set dataset.train_size={len(train_x)}"
        )
    if test_size is not None and test_size > len(test_x):
        raise UserError(
            f"dataset.test_size: {test_size}, but {path} holds {len(test_x)} test images; "
            f"pass --set dataset.test_size={len(test_x)}"
        )
    test_n = len(test_x) if test_size is None else test_size
    return Cifar10(
        train_x=np.ascontiguousarray(train_x[:train_size]),
        train_y=train_y[:train_size],
        test_x=np.ascontiguousarray(test_x[:test_n]),
        test_y=test_y[:test_n],
        classes=[str(i) for i in range(classes)],
    )


def _headers(path: Path, where: str) -> dict[str, tuple[int, ...]]:
    """Each array's declared shape, from its .npy header, read without its data; one line for
    a missing, encrypted, unreadably compressed, object or cut-short member."""
    cure = "write it with np.savez"
    try:
        with zipfile.ZipFile(path) as zf:
            members = {n.removesuffix(".npy"): n for n in zf.namelist() if n.endswith(".npy")}
            missing = [k for k in KEYS if k not in members]
            if missing:
                raise UserError(
                    f"{where}: no array {missing[0]!r} (it holds "
                    f"{', '.join(members) or 'none'}); save it with "
                    f"np.savez(path, {'=..., '.join(KEYS)}=...)"
                )
            return {k: _header(zf, zf.getinfo(members[k]), k, where) for k in KEYS}
    except UserError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{where}: not a readable .npz ({exc}); {cure}") from None


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, where: str) -> tuple[int, ...]:
    if info.flag_bits & 0x1:  # zip's "encrypted" flag: reading it would ask for a password
        raise UserError(
            f"{where}: {key} is encrypted; write the arrays with np.savez (no password)"
        )
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
            offset = f.tell()
    except NotImplementedError:  # zipfile's word for a compression method it cannot read
        raise UserError(
            f"{where}: {key} is compressed with zip method {info.compress_type}, which Python "
            "cannot read; write it with np.savez or np.savez_compressed"
        ) from None
    except (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: {key} is not a readable .npy array ({why})") from None
    if dtype.hasobject:  # refused, never unpickled
        raise UserError(
            f"{where}: {key} is an object array (pickled data), which is never loaded; save "
            "plain numeric arrays (uint8 images, integer labels)"
        )
    need = math.prod(shape) * dtype.itemsize
    have = info.file_size - offset
    if need != have:
        raise UserError(
            f"{where}: {key} declares {dtype} of shape {tuple(shape)} ({need:,} bytes), but "
            f"holds {have:,} bytes of data: a cut-short or damaged file; write it again "
            "with np.savez"
        )
    return tuple(shape)


def arrays_source(path: Path) -> str:
    """The run row's data_source: the file and its sha256 (what the cell id leaves out)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"arrays {path.resolve()} sha256:{digest.hexdigest()}"


def _layout(shape: tuple[int, ...], key: str, where: str) -> tuple[int, int, int, int]:
    """(N, C, H, W) of an image array's shape: channels-last when its last axis is 1, 3 or 4
    and its second is not; the checks every image array passes."""
    if len(shape) != 4:
        raise UserError(
            f"{where}: {key} has shape {shape}; images are 4-D, (N, C, H, W) or (N, H, W, C)"
        )
    if shape[-1] in _CHANNELS and shape[1] not in _CHANNELS:
        shape = (shape[0], shape[3], shape[1], shape[2])
    n, c, h, w = shape
    if c not in _CHANNELS:
        raise UserError(
            f"{where}: {key} has shape {shape}: no axis of 1, 3 or 4 channels at 1 or 3"
        )
    if h != w:
        raise UserError(
            f"{where}: {key} images are {h}x{w}; the augmentation crops squares: give square images"
        )
    if h < 8:
        raise UserError(f"{where}: {key} images are {h}x{w}; give at least 8x8 pixels")
    if n == 0:
        raise UserError(f"{where}: {key} holds no images")
    return n, c, h, w


def _images(x: np.ndarray, key: str, where: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise UserError(
            f"{where}: {key} is {x.dtype}; images must be uint8 (0..255), e.g. "
            f"(x * 255).round().astype(np.uint8)"
        )
    _layout(x.shape, key, where)
    if x.shape[-1] in _CHANNELS and x.shape[1] not in _CHANNELS:
        x = x.transpose(0, 3, 1, 2)
    return x


def _labels(y: np.ndarray, key: str, n: int, classes: int, where: str) -> np.ndarray:
    try:
        return class_labels(y, n, classes)
    except LabelError as exc:
        if exc.low is None or exc.high is None:  # not integer labels at all
            raise UserError(
                f"{where}: {key} holds {exc.reason}; labels must be integers 0..classes-1, "
                "one per image"
            ) from None
        hint = ""
        if exc.low >= 0 and exc.high < 2**31:  # a plausible class count: say how to set it
            hint = f" (set classes: {max(exc.high + 1, 2)} if the labels are right)"
        raise UserError(
            f"dataset.classes: {classes}, but {key} of {where.removeprefix('dataset.path: ')} "
            f"holds {exc.reason}; labels run 0..classes-1{hint}"
        ) from None


def _shape(x: np.ndarray) -> str:
    return "x".join(str(d) for d in x.shape[1:])
