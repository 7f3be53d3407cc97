"""Trust, third pass (issue 39 items 3, 8, 9, 10, 11, 12): data files, checkpoints and the
adaptive gate that fooled the harness or stopped it with a traceback, through the real CLI.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli


def one_line_error(result, *needles: str) -> str:
    """The one stderr line of a refused command (exit 2, no traceback), holding `needles`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


TINY = """\
name: tiny
dataset: {dataset}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], factor: 2, batch_size: 16}}
schedules:
  decaying: {{realization: lr}}
training: {{ghost_batch_size: 8}}
execution: {{eval_batch_size: 32}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [decaying], seeds: [0]}}
"""


def _tiny_suite(folder: Path, dataset: str) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(dataset=dataset))
    return path


# --- 39.3: class labels are integers in 0..classes-1 ------------------------------------------


def _cifar_folder(root: Path, labels: object, per_batch: int = 16) -> Path:
    """A CIFAR-10 folder whose first training batch holds `labels` (the others are fine)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = labels if name == "data_batch_1" else [int(v) for v in np.arange(per_batch) % 10]
        (folder / name).write_bytes(pickle.dumps({"data": x, "labels": y}, protocol=3))
    return root


@pytest.mark.parametrize(
    ("labels", "says"),
    [
        ([1.7] * 16, "floats"),  # was cut to 1 and trained "ok" with a loss of 0.0000
        (["cat"] * 16, "strings"),
        ([10**30] + [0] * 15, "outside 0..9"),
        ({i: 0 for i in range(16)}, "a dict"),
        ([True] * 16, "booleans"),
        ([0] * 15, "one label per image"),
    ],
)
def test_cifar_labels_that_are_not_class_indices_are_one_line(tmp_path, labels, says):
    data = _cifar_folder(tmp_path / "data", labels)
    suite = _tiny_suite(tmp_path, "{name: cifar10, train_size: 16, test_size: 16}")
    results = tmp_path / "results"
    result = run_cli("run", str(suite), "--results", str(results), "--data", str(data))
    one_line_error(result, "data_batch_1", "'labels'", says, "integers 0..9")
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_arrays_labels_that_are_not_integers_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, train_x=x, train_y=np.full(32, 1.7), test_x=x, test_y=np.arange(32) % 3)
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 32}}"
    suite = _tiny_suite(tmp_path, dataset)
    result = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")
    one_line_error(result, "dataset.path", "train_y", "floats", "integers 0..classes-1")


# --- 39.11: an `arrays` .npz is checked from its headers, before training -------------------


def _arrays_suite(tmp_path: Path, path: Path) -> Path:
    dataset = f"{{name: arrays, path: {json.dumps(str(path))}, classes: 3, train_size: 32}}"
    return _tiny_suite(tmp_path, dataset)


def _run_arrays(tmp_path: Path, path: Path):
    suite = _arrays_suite(tmp_path, path)
    return run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--device", "cpu")


def _save_arrays(path: Path, channels: int = 3) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, channels), dtype=np.uint8)
    y = np.arange(32) % 3
    np.savez(path, train_x=x, train_y=y, test_x=x, test_y=y)
    return path


@pytest.mark.parametrize("channels", [1, 4])
def test_arrays_of_other_channels_than_the_model_takes_are_refused_before_training(
    tmp_path, channels
):
    result = _run_arrays(tmp_path, _save_arrays(tmp_path / "d.npz", channels))
    line = one_line_error(result, "dataset.path", f"{channels} channel(s)", "'small'", "takes 3")
    assert "(N, H, W, 3)" in line
    assert not (tmp_path / "r" / "runs").exists()


def _npy(shape: tuple[int, ...], data: bytes, dtype: str = "|u1") -> bytes:
    import io

    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def _npz(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(f"{name}.npy", blob)
    return path


def _members_of(path: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return {n.removesuffix(".npy"): zf.read(n) for n in zf.namelist()}


def test_a_header_declaring_more_than_the_member_holds_is_one_line(tmp_path):
    members = _members_of(_save_arrays(tmp_path / "ok.npz"))
    # 10**7 images of 32x32x3 declared (30 GB), 3 KB there: was a 30 GB allocation attempt.
    members["train_x"] = _npy((10**7, 32, 32, 3), bytes(3072))
    result = _run_arrays(tmp_path, _npz(tmp_path / "big.npz", members))
    one_line_error(result, "dataset.path", "train_x", "(10000000, 32, 32, 3)", "holds 3,072 bytes")


def test_data_shorter_than_declared_is_not_called_pickled_data(tmp_path):
    members = _members_of(_save_arrays(tmp_path / "ok.npz"))
    members["test_x"] = members["test_x"][:-100]
    result = _run_arrays(tmp_path, _npz(tmp_path / "short.npz", members))
    line = one_line_error(result, "dataset.path", "test_x", "cut-short")
    assert "pickled" not in line


def _patch_member_headers(path: Path, offset_local: int, offset_central: int, value: bytes):
    """Overwrite a field of every local and central zip header (a forged member)."""
    blob = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", offset_local), (b"PK\x01\x02", offset_central)):
        start = blob.find(signature)
        while start != -1:
            blob[start + offset : start + offset + len(value)] = value
            start = blob.find(signature, start + 4)
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    ("local", "central", "value", "says"),
    [
        (6, 8, b"\x01\x00", "encrypted"),  # general purpose flag bit 0
        (8, 10, b"\x63\x00", "zip method 99"),  # AES / an unknown compression method
    ],
)
def test_an_encrypted_or_unknown_compression_member_is_one_line(
    tmp_path, local, central, value, says
):
    path = _save_arrays(tmp_path / "d.npz")
    _patch_member_headers(path, local, central, value)
    result = _run_arrays(tmp_path, path)
    one_line_error(result, "dataset.path", "train_x", says)


# --- 39.12: image folders: a link loop or a non-UTF-8 name is skipped and counted -------------

IMAGENET_SUITE = """\
name: folder
dataset: {{name: imagenet, train_size: {n}, test_size: 6, image_size: 32}}
models:
  resnet: {{name: resnet50, width: 4, max_blocks: 1}}
optimizers:
  momentum: {{kind: momentum, lr: 0.1, momentum: 0.9}}
schedule: {{epochs: 1, milestones: [], batch_size: 8}}
schedules:
  constant: {{realization: lr}}
training: {{ghost_batch_size: 4}}
execution: {{eval_batch_size: 6, loader_workers: 0}}
experiments:
  - {{name: tiny, optimizers: [momentum], schedules: [constant], seeds: [0]}}
"""


def _image_folder(root: Path, per_class: int = 8) -> Path:
    from PIL import Image

    classes = ("n01440764", "n01443537", "n01484850")
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for wnid in classes:
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def test_a_link_loop_and_a_non_utf8_name_are_skipped_and_counted(tmp_path):
    data = _image_folder(tmp_path / "data")
    train = data / "imagenet" / "train" / "n01443537"
    os.symlink("loop.jpg", train / "loop.jpg")  # follows itself: ELOOP (errno 40)
    with open(os.fsencode(train) + b"/bad\xff.jpg", "wb") as f:  # not UTF-8: was a traceback
        f.write((train / "n01443537_0.JPEG").read_bytes())
    suite = tmp_path / "suite.yaml"
    results = tmp_path / "results"
    args = ("--results", str(results), "--device", "cpu", "--data", str(data))

    suite.write_text(IMAGENET_SUITE.format(n=26))  # every file counted: two are not images
    refused = run_cli("run", str(suite), *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert "24 readable images" in refused.stderr and "dataset.train_size=24" in refused.stderr
    assert "skipped 2 of 26" in refused.stderr, refused.stderr
    assert "loop.jpg" in refused.stderr and "symbolic links" in refused.stderr
    assert "bad\\xff.jpg" in refused.stderr and "not UTF-8" in refused.stderr


def test_a_class_folder_named_in_other_bytes_than_utf8_is_one_line(tmp_path):
    data = _image_folder(tmp_path / "data")
    folder = os.fsencode(data / "imagenet" / "train") + b"/n0\xff"
    os.mkdir(folder)
    image = data / "imagenet" / "train" / "n01440764" / "n01440764_0.JPEG"
    with open(folder + b"/x.jpg", "wb") as f:  # was a UnicodeEncodeError traceback
        f.write(image.read_bytes())
    suite = tmp_path / "suite.yaml"
    suite.write_text(IMAGENET_SUITE.format(n=24))
    result = run_cli("run", str(suite), "--results", str(tmp_path / "r"), "--data", str(data))
    one_line_error(result, "n0\\xff", "not UTF-8", "rename it")
