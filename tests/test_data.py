"""harness.data: safe loading, data-root resolution, download, device-side augmentation."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.cifar10 import (
    CLASSES,
    Cifar10,
    cifar10_source,
    load_cifar10,
    synthetic_cifar10,
)
from harness.data.device import DeviceData, random_crop_flip
from harness.data.download import download_cifar10
from harness.data.request import resolve_data_root
from harness.data.safe_pickle import read_batch
from harness.errors import UserError

CPU = torch.device("cpu")


# --- helpers -----------------------------------------------------------------------------------


def _batch_bytes(x: np.ndarray, y: np.ndarray, label: str) -> bytes:
    # Protocol 3 writes the same three numpy globals as the official (Python 2) files.
    batch = {"batch_label": label, "labels": [int(v) for v in y], "data": x.reshape(len(x), -1)}
    return pickle.dumps(batch, protocol=3)


def _fake_files(ds: Cifar10, per_batch: int) -> dict[str, bytes]:
    files = {}
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        files[f"data_batch_{i + 1}"] = _batch_bytes(ds.train_x[sl], ds.train_y[sl], f"b{i}")
    files["test_batch"] = _batch_bytes(ds.test_x, ds.test_y, "test")
    meta = {"label_names": list(CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    return files


def _write_fake(folder: Path, ds: Cifar10, per_batch: int) -> Path:
    folder.mkdir(parents=True)
    for name, blob in _fake_files(ds, per_batch).items():
        (folder / name).write_bytes(blob)
    return folder


def _tarball(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small() -> Cifar10:
    return synthetic_cifar10(train_size=20, test_size=6, seed=0)


@pytest.fixture(scope="module")
def real_root() -> Path:
    value = os.environ.get("HARNESS_DATA")
    if not value:
        pytest.skip("HARNESS_DATA is not set (a folder holding cifar-10-batches-py/)")
    root = Path(value)
    if not (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip(f"HARNESS_DATA={value} holds no cifar-10-batches-py/data_batch_1")
    return root


@pytest.fixture(scope="module")
def real(real_root: Path) -> Cifar10:
    return load_cifar10(real_root)


# --- safe unpickling ---------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


def test_os_system_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Hand-written protocol 0, so the global is spelled 'os.system' (pickling os.system
    # itself would write 'posix.system').
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(payload)
    with pytest.raises(UserError) as e:
        read_batch(evil)
    assert str(e.value) == (
        f"{evil}: refusing to unpickle global 'os.system': not a CIFAR-10 batch file"
    )
    assert not marker.exists()


def test_eval_pickle_inside_dataset_is_refused_and_not_run(tmp_path: Path, small: Cifar10) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(marker), "labels": []}, protocol=4)
    # Control: an ordinary unpickler would run it, so the check below means something.
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()

    folder = _write_fake(tmp_path / "cifar-10-batches-py", small, per_batch=4)
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(UserError, match=r"refusing to unpickle global 'builtins\.eval'"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_garbage_file_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="not a CIFAR-10 batch file"):
        read_batch(bad)


# --- loading -----------------------------------------------------------------------------------


def test_fake_folder_round_trips(tmp_path: Path, small: Cifar10) -> None:
    folder = _write_fake(tmp_path / "cifar-10-batches-py", small, per_batch=4)
    for root in (tmp_path, folder):  # the parent and the folder itself both work
        ds = load_cifar10(root)
        np.testing.assert_array_equal(ds.train_x, small.train_x)
        np.testing.assert_array_equal(ds.train_y, small.train_y)
        np.testing.assert_array_equal(ds.test_x, small.test_x)
        assert ds.train_y.dtype == np.int64
        assert ds.classes == list(CLASSES)
    sub = load_cifar10(tmp_path, train_size=6, test_size=0)
    np.testing.assert_array_equal(sub.train_x, small.train_x[:6])
    assert sub.test_x.shape == (0, 3, 32, 32)


def test_missing_file_names_it_and_suggests_download(tmp_path: Path, small: Cifar10) -> None:
    folder = _write_fake(tmp_path / "cifar-10-batches-py", small, per_batch=4)
    (folder / "test_batch").unlink()
    with pytest.raises(UserError, match=r"test_batch.*harness data cifar10 DIR"):
        load_cifar10(tmp_path)
    with pytest.raises(UserError, match=r"cifar-10-batches-py.*harness data cifar10 DIR"):
        load_cifar10(tmp_path / "elsewhere")


def test_size_larger_than_available_names_the_field(tmp_path: Path, small: Cifar10) -> None:
    _write_fake(tmp_path / "cifar-10-batches-py", small, per_batch=4)
    with pytest.raises(UserError, match=r"dataset\.train_size: 21 .* 20 examples"):
        load_cifar10(tmp_path, train_size=21)
    with pytest.raises(UserError, match=r"dataset\.test_size: 7 "):
        load_cifar10(tmp_path, test_size=7)


def test_real_cifar10_shapes_counts_and_prefix(real_root: Path, real: Cifar10) -> None:
    assert real.train_x.shape == (50000, 3, 32, 32) and real.train_x.dtype == np.uint8
    assert real.test_x.shape == (10000, 3, 32, 32) and real.test_x.dtype == np.uint8
    assert real.train_y.shape == (50000,) and real.train_y.dtype == np.int64
    assert real.test_y.shape == (10000,) and real.test_y.dtype == np.int64
    assert np.bincount(real.train_y, minlength=10).tolist() == [5000] * 10
    assert np.bincount(real.test_y, minlength=10).tolist() == [1000] * 10
    assert real.classes == list(CLASSES)
    # Crosses the boundary between data_batch_1 and data_batch_2.
    sub = load_cifar10(real_root, train_size=12345, test_size=100)
    np.testing.assert_array_equal(sub.train_x, real.train_x[:12345])
    np.testing.assert_array_equal(sub.train_y, real.train_y[:12345])
    np.testing.assert_array_equal(sub.test_x, real.test_x[:100])
    np.testing.assert_array_equal(sub.test_y, real.test_y[:100])


def test_source_tells_copies_apart(tmp_path: Path, small: Cifar10) -> None:
    folder = _write_fake(tmp_path / "cifar-10-batches-py", small, per_batch=4)
    assert cifar10_source(tmp_path) == "unverified"
    (folder / "SHA256SUMS").write_text("")  # what the JPEG pack's unpack.py leaves behind
    assert cifar10_source(tmp_path) == "jpeg-derived"
    assert cifar10_source(tmp_path / "nowhere") == "unverified"


def test_real_copy_is_recognized(real_root: Path) -> None:
    # CI unpacks the JPEG-derived pack; a user's download is the official tarball.
    assert cifar10_source(real_root) in {"official", "jpeg-derived"}


def test_real_cifar10_channel_stats(real: Cifar10) -> None:
    # Values from shared/data/cifar10/README.md for this (JPEG-derived) copy.
    dd = DeviceData.from_arrays(real, CPU)
    np.testing.assert_allclose(dd.mean.numpy(), [0.4913, 0.4821, 0.4465], atol=2e-4)
    np.testing.assert_allclose(dd.std.numpy(), [0.2452, 0.2428, 0.2606], atol=2e-4)
    x = dd.normalize(torch.from_numpy(real.train_x[::10]))
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.02
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.02


# --- resolve_data_root -------------------------------------------------------------------------


def test_flag_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(str(tmp_path / "flag")) == tmp_path / "flag"


def test_env_used_without_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"


def test_neither_flag_nor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    with pytest.raises(UserError, match=r"--data DIR.*HARNESS_DATA=DIR"):
        resolve_data_root(None)


# --- download ----------------------------------------------------------------------------------


def _official_like_tarball(tmp_path: Path, small: Cifar10) -> tuple[str, str]:
    members = {f"cifar-10-batches-py/{k}": v for k, v in _fake_files(small, 4).items()}
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    tgz = tmp_path / "src" / "cifar-10-python.tar.gz"
    tgz.parent.mkdir()
    return tgz.as_uri(), _tarball(tgz, members)


def test_download_verifies_extracts_and_skips(tmp_path: Path, small: Cifar10) -> None:
    url, md5 = _official_like_tarball(tmp_path, small)
    dest = tmp_path / "data"
    folder = download_cifar10(dest, url=url, md5=md5)
    assert folder == dest / "cifar-10-batches-py"
    np.testing.assert_array_equal(load_cifar10(dest).train_x, small.train_x)
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py"]  # no temp files
    # Present and loadable: no network use at all, so a dead URL is fine.
    assert download_cifar10(dest, url=(tmp_path / "gone.tar.gz").as_uri(), md5=md5) == folder


def test_download_wrong_md5_leaves_nothing(tmp_path: Path, small: Cifar10) -> None:
    url, _ = _official_like_tarball(tmp_path, small)
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(UserError, match="md5") as e:
        download_cifar10(dest, url=url, md5="0" * 32)
    assert "\n" not in str(e.value)
    assert list(dest.iterdir()) == []
    fresh = tmp_path / "fresh"
    with pytest.raises(UserError, match="md5"):
        download_cifar10(fresh, url=url, md5="0" * 32)
    assert not fresh.exists()


def test_download_rejects_path_traversal(tmp_path: Path, small: Cifar10) -> None:
    members = {f"cifar-10-batches-py/{k}": v for k, v in _fake_files(small, 4).items()}
    members["../escaped"] = b"x"
    tgz = tmp_path / "evil.tar.gz"
    md5 = _tarball(tgz, members)
    dest = tmp_path / "data"
    dest.mkdir()
    with pytest.raises(UserError, match="unsafe path"):
        download_cifar10(dest, url=tgz.as_uri(), md5=md5)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped").exists()


def test_download_network_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"download of .* failed") as e:
        download_cifar10(tmp_path / "d", url=(tmp_path / "nope.tar.gz").as_uri(), md5="0" * 32)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "d").exists()


# --- augmentation and batching -----------------------------------------------------------------


def _find_window(img: np.ndarray, out: np.ndarray) -> list[tuple[int, int, bool]]:
    """Every (dy, dx, flipped) for which ``out`` is a window of reflect-padded ``img``."""
    padded = np.pad(img, ((0, 0), (4, 4), (4, 4)), mode="reflect")
    hits = []
    for dy in range(9):
        for dx in range(9):
            window = padded[:, dy : dy + 32, dx : dx + 32]
            for flipped in (False, True):
                if np.array_equal(window[:, :, ::-1] if flipped else window, out):
                    hits.append((dy, dx, flipped))
    return hits


@pytest.fixture(scope="module")
def synth() -> Cifar10:
    return synthetic_cifar10(train_size=600, test_size=70, seed=1)


def test_crops_are_windows_of_the_reflection_padded_image(synth: Cifar10) -> None:
    dd = DeviceData.from_arrays(synth, CPU)
    assert dd.train_padded.shape == (600, 3, 40, 40) and dd.train_padded.dtype == torch.uint8
    indices = torch.randperm(600, generator=torch.Generator().manual_seed(0))[:400]
    out = random_crop_flip(dd.train_padded, indices, torch.Generator().manual_seed(5))
    assert out.shape == (400, 3, 32, 32) and out.dtype == torch.uint8
    found = []
    for j, i in enumerate(indices.tolist()):
        hits = _find_window(synth.train_x[i], out[j].numpy())
        assert len(hits) == 1, f"example {i}: {hits}"
        found.append(hits[0])
    dys, dxs, flips = zip(*found, strict=True)
    assert set(dys) == set(range(9)) and set(dxs) == set(range(9))
    assert 0.4 < np.mean(flips) < 0.6


def test_train_batch_is_normalized_crop_and_seeded(synth: Cifar10) -> None:
    dd = DeviceData.from_arrays(synth, CPU)
    indices = torch.arange(0, 600, 3)
    x1, y1 = dd.train_batch(indices, torch.Generator().manual_seed(7))
    x2, y2 = dd.train_batch(indices, torch.Generator().manual_seed(7))
    x3, _ = dd.train_batch(indices, torch.Generator().manual_seed(8))
    assert x1.shape == (200, 3, 32, 32) and x1.dtype == torch.float32
    assert y1.dtype == torch.int64
    torch.testing.assert_close(y1, torch.from_numpy(synth.train_y[::3]))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    crop = random_crop_flip(dd.train_padded, indices, torch.Generator().manual_seed(7))
    assert torch.equal(x1, dd.normalize(crop))


def test_normalization_is_zero_mean_unit_std_on_train(synth: Cifar10) -> None:
    dd = DeviceData.from_arrays(synth, CPU)
    x = dd.normalize(torch.from_numpy(synth.train_x))
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    assert dd.mean.dtype == torch.float32 and dd.std.dtype == torch.float32


def test_test_batches_in_order(synth: Cifar10) -> None:
    dd = DeviceData.from_arrays(synth, CPU)
    assert (dd.n_train, dd.n_test) == (600, 70)
    batches = list(dd.test_batches(32))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    x = torch.cat([b for b, _ in batches])
    y = torch.cat([b for _, b in batches])
    assert torch.equal(x, dd.normalize(torch.from_numpy(synth.test_x)))
    assert torch.equal(y, torch.from_numpy(synth.test_y))


def test_channels_last(synth: Cifar10) -> None:
    dd = DeviceData.from_arrays(synth, CPU, channels_last=True)
    x, _ = dd.train_batch(torch.arange(16), torch.Generator().manual_seed(0))
    assert x.is_contiguous(memory_format=torch.channels_last)
    tx, _ = next(dd.test_batches(8))
    assert tx.is_contiguous(memory_format=torch.channels_last)


def test_synthetic_is_learnable_from_mean_colour(synth: Cifar10) -> None:
    # Nearest class-mean colour, fitted on train, must beat chance by far on test.
    feats = synth.train_x.mean(axis=(2, 3))
    centroids = np.stack([feats[synth.train_y == k].mean(0) for k in range(10)])
    test_feats = synth.test_x.mean(axis=(2, 3))
    pred = np.argmin(((test_feats[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == synth.test_y).mean() > 0.8
