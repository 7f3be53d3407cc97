"""The ImageNet folder data path on a tiny generated folder: layout, skipping, crops, batches.

Every folder here is written by the test with Pillow (3 classes x 8 small JPEGs, plus a
corrupt file), so the tests run anywhere in a few seconds; the num_workers=2 case starts two
worker processes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.data.image_loader import (
    EpochBatchSampler,
    EvalBatchSampler,
    ImageFolderDataset,
    image_loader,
    open_image_folder,
)
from harness.data.image_transforms import (
    CROP_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    UnreadableImageError,
    eval_resize_size,
    normalize,
    random_resized_crop_box,
    resolve_backend,
    sample_rng,
    torchvision_available,
)
from harness.data.imagefolder import ImageList, image_classes, scan_split
from harness.errors import UserError

CLASSES = ("n01440764", "n01443537", "n01484850")
PER_CLASS = 8
SIZE = 24


def _write_image(path: Path, rng: np.random.Generator, cls: int, h: int, w: int) -> None:
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pixels[..., cls] = 255  # a class colour, so labels could be learned
    Image.fromarray(pixels).save(path, quality=90)


def _make_root(tmp: Path, *, flat_val: str | None = None) -> Path:
    """ROOT/train/<wnid>/ (+ one corrupt file) and ROOT/val/, per class or flat."""
    rng = np.random.default_rng(0)
    root = tmp / "imagenet"
    for c, wnid in enumerate(CLASSES):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            # Sizes vary so that crop boxes differ between images; one is very elongated.
            h, w = (12, 90) if i == 7 else (30 + 3 * i, 40 + 2 * c)
            _write_image(folder / f"{wnid}_{i}.JPEG", rng, c, h, w)
    (root / "train" / CLASSES[1] / "corrupt.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")
    val = root / "val"
    val.mkdir()
    lines = []
    for c, wnid in enumerate(CLASSES):
        for i in range(2):
            name = f"ILSVRC2012_val_{c * 2 + i + 1:08d}.JPEG"
            if flat_val is None:
                (val / wnid).mkdir(exist_ok=True)
                _write_image(val / wnid / name, rng, c, 50, 40)
            else:
                _write_image(val / name, rng, c, 50, 40)
                lines.append((name, wnid))
    if flat_val == "val_labels.txt":
        (val / "val_labels.txt").write_text("".join(f"{n} {w}\n" for n, w in lines))
    elif flat_val == "LOC_val_solution.csv":
        rows = "".join(f"{n.removesuffix('.JPEG')},{w} 1 2 30 40 {w} 3 4 5 6\n" for n, w in lines)
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_root(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def train(root: Path) -> ImageList:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scan_split(root, "train")


def _dataset(images: ImageList, train: bool = True, size: int = SIZE) -> ImageFolderDataset:
    return ImageFolderDataset(images, ImageTransform(size, train=train))


# --- layout, counting and skipping ---------------------------------------------------------


def test_scan_counts_images_skips_the_corrupt_one_with_a_warning(root: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipped 1 of 25 images, using N = 24: .*corrupt\.JPEG"):
        images = scan_split(root, "train")
    assert images.n == len(CLASSES) * PER_CLASS == 24
    assert [p for p, _ in images.skipped] == [f"{CLASSES[1]}/corrupt.JPEG"]
    assert images.classes == CLASSES == image_classes(root)
    assert np.bincount(images.labels).tolist() == [PER_CLASS] * 3
    # Labels follow the folder each file is in; the order is sorted and stable.
    for i in range(images.n):
        assert images.path(i).parent.name == CLASSES[images.labels[i]]
    assert list(images.paths) == sorted(images.paths)
    assert len(_dataset(images)) == 24


def test_decode_check_also_catches_a_truncated_jpeg(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    good = root / "train" / CLASSES[2] / f"{CLASSES[2]}_0.JPEG"
    good.write_bytes(good.read_bytes()[:200])  # header intact, data cut off
    with pytest.warns(UserWarning, match="skipped 2 of 25"):
        images = scan_split(root, "train", check="decode")
    assert images.n == 23


@pytest.mark.parametrize("flat_val", [None, "val_labels.txt", "LOC_val_solution.csv"])
def test_val_split_in_class_folders_or_flat_with_a_labels_file(
    tmp_path: Path, flat_val: str | None
) -> None:
    root = _make_root(tmp_path, flat_val=flat_val)
    val = scan_split(root, "val")
    assert val.n == 6 and val.skipped == ()
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_flat_val_image_without_a_label_is_skipped_and_counted(tmp_path: Path) -> None:
    root = _make_root(tmp_path, flat_val="val_labels.txt")
    _write_image(root / "val" / "extra.JPEG", np.random.default_rng(1), 0, 20, 20)
    with pytest.warns(UserWarning, match=r"skipped 1 of 7 .*extra\.JPEG \(no label"):
        val = scan_split(root, "val")
    assert val.n == 6


def test_missing_root_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nowhere: no such folder; expected ROOT/train") as info:
        scan_split(tmp_path / "nowhere", "train")
    assert "\n" not in str(info.value)


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "val").rmdir()
    with pytest.raises(UserError, match=r"imagenet/val: no such folder") as info:
        scan_split(root, "val")
    assert "\n" not in str(info.value)


def test_root_without_class_folders_is_named(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match=r"no class folders in train/"):
        scan_split(tmp_path, "train")


def test_flat_val_without_labels_file_says_which_files_it_looked_for(tmp_path: Path) -> None:
    root = _make_root(tmp_path, flat_val="none")
    with pytest.raises(UserError, match=r"no labels file .*val_labels\.txt or LOC_val_solution"):
        scan_split(root, "val")


def test_malformed_labels_file_names_the_line(tmp_path: Path) -> None:
    root = _make_root(tmp_path, flat_val="val_labels.txt")
    labels = root / "val" / "val_labels.txt"
    labels.write_text(labels.read_text() + "just-one-field\n")
    with pytest.raises(UserError, match=r"val_labels\.txt:7: expected 'FILENAME WNID'"):
        scan_split(root, "val")


def test_val_class_folder_unknown_to_train_is_named(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    (root / "val" / "n99999999").mkdir()
    with pytest.raises(UserError, match=r"n99999999: class folder not among the 3 classes"):
        scan_split(root, "val")


def test_split_of_only_unreadable_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "n1").mkdir(parents=True)
    (tmp_path / "train" / "n1" / "a.jpg").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"no readable \.JPEG"):
            scan_split(tmp_path, "train")


# --- transforms -----------------------------------------------------------------------------


def test_train_and_eval_transforms_give_uint8_squares(train: ImageList) -> None:
    for is_train in (True, False):
        image, label = _dataset(train, train=is_train)[(5, 123)]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
        assert image.is_contiguous()
        assert label == int(train.labels[5])


def test_eval_transform_is_resize_shorter_side_then_centre_crop(train: ImageList) -> None:
    size = 16
    image, _ = _dataset(train, train=False, size=size)[3]
    with Image.open(train.path(3)) as img:
        w, h = img.size
        short = eval_resize_size(size)  # round(16 / 0.875) = 18
        assert short == 18
        rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        resized = img.convert("RGB").resize((rw, rh), Image.Resampling.BILINEAR)
    top, left = round((rh - size) / 2), round((rw - size) / 2)
    expected = np.asarray(resized)[top : top + size, left : left + size].transpose(2, 0, 1)
    assert torch.equal(image, torch.from_numpy(expected.copy()))
    assert torch.equal(image, _dataset(train, train=False, size=size)[(3, 99)][0])


@settings(max_examples=200, deadline=None)
@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    seed=st.integers(0, 2**63 - 1),
    index=st.integers(0, 2_000_000),
)
def test_crop_box_is_inside_the_image_with_the_documented_area_and_ratio(
    h: int, w: int, seed: int, index: int
) -> None:
    top, left, ch, cw = random_resized_crop_box(h, w, sample_rng(seed, index))
    assert top >= 0 and top + ch <= h and left >= 0 and left + cw <= w and ch >= 1 and cw >= 1
    assert (top, left, ch, cw) == random_resized_crop_box(h, w, sample_rng(seed, index))
    if h >= 20 and w >= 20 and CROP_RATIO[0] <= w / h <= CROP_RATIO[1]:
        # Not the fallback: area and ratio within range (up to rounding to whole pixels).
        assert ch * cw <= h * w
        ratio = cw / ch
        slack = 1 / min(ch, cw) + 1 / max(ch, cw) + 1e-9
        assert CROP_RATIO[0] * (1 - slack) <= ratio <= CROP_RATIO[1] * (1 + slack) or (
            ch == h or cw == w
        )


def test_elongated_image_falls_back_to_a_centre_crop_within_the_ratio() -> None:
    rng = np.random.default_rng(0)
    top, left, h, w = random_resized_crop_box(10, 1000, rng)
    assert (top, h) == (0, 10) and w == round(10 * 4 / 3) and left == (1000 - w) // 2


def test_draft_decoding_keeps_the_crop_close_to_a_full_decode(tmp_path: Path) -> None:
    # A smooth large image: DCT-domain downscaling differs from a full decode only slightly.
    yy, xx = np.mgrid[0:600, 0:800]
    pixels = np.stack([xx * 255 // 800, yy * 255 // 600, (xx + yy) * 255 // 1400], -1)
    path = tmp_path / "big.JPEG"
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    exact = ImageTransform(32, train=True)(path, sample_rng(7, 0))
    drafted = ImageTransform(32, train=True, draft=True)(path, sample_rng(7, 0))
    assert drafted.shape == exact.shape == (3, 32, 32)
    assert (drafted.float() - exact.float()).abs().mean() < 6


def test_unreadable_image_at_load_time_names_the_file(tmp_path: Path) -> None:
    root = _make_root(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = scan_split(root, "train")
    images.path(0).write_bytes(b"gone bad after the scan")
    cure = "execution.image_check: decode"
    with pytest.raises(UnreadableImageError, match=rf"_0\.JPEG: cannot decode .*{cure}"):
        _dataset(images)[(0, 1)]


def test_normalize_uses_imagenet_mean_and_std() -> None:
    x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    out = normalize(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))
    assert normalize(x, channels_last=True).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(
    not torchvision_available(),
    reason="torchvision does not import here (it is the optional [vision] extra and needs its "
    "compiled ops); the Pillow backend is the one tested on this machine",
)
def test_torchvision_backend_matches_pillow_within_resize_rounding(train: ImageList) -> None:
    for is_train in (True, False):
        pil = ImageTransform(SIZE, train=is_train, backend="pillow")
        tv = ImageTransform(SIZE, train=is_train, backend="torchvision")
        for i in range(4):
            a = pil(train.path(i), sample_rng(3, i)).float()
            b = tv(train.path(i), sample_rng(3, i)).float()
            assert a.shape == b.shape and (a - b).abs().mean() < 8


# --- epochs and batches ---------------------------------------------------------------------


def _epoch(
    dataset: ImageFolderDataset,
    batch: int,
    order_seed: int,
    augment_seed: int,
    workers: int = 0,
    micro: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    sampler = EpochBatchSampler(len(dataset))
    sampler.set_epoch(
        batch_size=batch, order_seed=order_seed, augment_seed=augment_seed, micro_batch=micro
    )
    return list(image_loader(dataset, sampler, num_workers=workers))


def _cat(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_epoch_has_floor_n_over_b_full_batches_without_repeats(train: ImageList) -> None:
    dataset = _dataset(train)
    for batch in (1, 5, 7, 24):
        sampler = EpochBatchSampler(train.n)
        sampler.set_epoch(batch_size=batch, order_seed=3, augment_seed=4)
        keys = list(sampler)
        assert len(keys) == len(sampler) == sampler.steps == 24 // batch
        assert all(len(k) == batch for k in keys)
        flat = [i for step in keys for i, _ in step]
        assert len(set(flat)) == len(flat) and all(s == 4 for step in keys for _, s in step)
    batches = _epoch(dataset, 5, 3, 4)
    assert len(batches) == 4
    assert all(x.shape == (5, 3, SIZE, SIZE) and y.shape == (5,) for x, y in batches)
    assert all(y.dtype == torch.int64 for _, y in batches)


def test_order_is_torch_randperm_of_the_order_seed(train: ImageList) -> None:
    sampler = EpochBatchSampler(train.n)
    sampler.set_epoch(batch_size=6, order_seed=11, augment_seed=0)
    expected = torch.randperm(24, generator=torch.Generator().manual_seed(11)).tolist()
    assert [i for step in sampler for i, _ in step] == expected


def test_order_and_crops_are_pure_functions_of_the_seeds(train: ImageList) -> None:
    dataset = _dataset(train)
    x1, y1 = _cat(_epoch(dataset, 6, order_seed=1, augment_seed=2))
    x2, y2 = _cat(_epoch(dataset, 6, order_seed=1, augment_seed=2))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # A new augment seed: same images in the same order, other crops.
    x3, y3 = _cat(_epoch(dataset, 6, order_seed=1, augment_seed=3))
    assert torch.equal(y1, y3) and not torch.equal(x1, x3)
    # A new order seed: the same crop per image (keyed by image, not position).
    x4, _ = _cat(_epoch(dataset, 24, order_seed=5, augment_seed=2))
    x1_all, _ = _cat(_epoch(dataset, 24, order_seed=1, augment_seed=2))
    perm1 = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    perm5 = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    by_image1 = torch.empty_like(x1_all)
    by_image1[perm1] = x1_all
    by_image5 = torch.empty_like(x4)
    by_image5[perm5] = x4
    assert torch.equal(by_image1, by_image5)


def test_batches_do_not_depend_on_workers_or_micro_batches(train: ImageList) -> None:
    dataset = _dataset(train)
    reference = _epoch(dataset, 8, order_seed=7, augment_seed=8, workers=0)
    with_workers = _epoch(dataset, 8, order_seed=7, augment_seed=8, workers=2)
    assert len(reference) == len(with_workers) == 3
    for (xa, ya), (xb, yb) in zip(reference, with_workers, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    micro = _epoch(dataset, 8, order_seed=7, augment_seed=8, micro=3)
    assert [len(y) for _, y in micro] == [3, 3, 2] * 3
    xa, ya = _cat(reference)
    xm, ym = _cat(micro)
    assert torch.equal(xa, xm) and torch.equal(ya, ym)


def test_one_loader_follows_a_plan_whose_batch_size_changes(train: ImageList) -> None:
    dataset = _dataset(train)
    sampler = EpochBatchSampler(train.n)
    sampler.set_epoch(batch_size=4, order_seed=0, augment_seed=0)
    loader = image_loader(dataset, sampler, num_workers=2)
    sizes = []
    for epoch, batch in enumerate((4, 4, 12)):
        sampler.set_epoch(batch_size=batch, order_seed=epoch, augment_seed=100 + epoch)
        steps = [len(y) for _, y in loader]
        assert len(steps) == sampler.steps == 24 // batch
        sizes.append(steps)
    assert sizes == [[4] * 6, [4] * 6, [12] * 2]


def test_eval_batches_cover_every_image_in_order(train: ImageList) -> None:
    dataset = _dataset(train, train=False)
    batches = list(image_loader(dataset, EvalBatchSampler(train.n, 10), num_workers=0))
    assert [len(y) for _, y in batches] == [10, 10, 4]
    assert torch.cat([y for _, y in batches]).tolist() == train.labels.tolist()


def test_sampler_refuses_use_before_set_epoch_and_bad_sizes() -> None:
    sampler = EpochBatchSampler(10)
    with pytest.raises(RuntimeError, match="set_epoch"):
        list(sampler)
    with pytest.raises(ValueError, match="exceeds the 10 images"):
        sampler.set_epoch(batch_size=11, order_seed=0, augment_seed=0)
    sampler.set_epoch(batch_size=3, order_seed=0, augment_seed=0, micro_batch=2)
    assert (sampler.steps, sampler.chunks_per_step, len(sampler)) == (3, 2, 6)
    assert math.isclose(sum(len(k) for k in sampler), 9)


def test_open_image_folder_gives_both_splits_at_the_models_size(root: Path) -> None:
    with pytest.warns(UserWarning, match="skipped 1 of 25"):
        data = open_image_folder(root, 32, backend="pillow")
    assert (data.n_train, data.n_val, data.skipped) == (24, 6, 1)
    assert data.classes == CLASSES and data.backend == "pillow" and data.size == 32
    assert data.train.transform.train and not data.val.transform.train
    image, _ = data.val[0]
    assert image.shape == (3, 32, 32)


@pytest.mark.skipif(
    torchvision_available(),
    reason="checks the fallback when torchvision cannot import; here it imports",
)
def test_auto_backend_falls_back_to_pillow_and_explicit_torchvision_says_how_to_fix() -> None:
    assert resolve_backend("auto") == "pillow"
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[vision\]'"):
        resolve_backend("torchvision")
