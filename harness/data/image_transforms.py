"""Decoding and cropping one ImageNet image: the standard train and evaluation transforms.

Train: random-resized crop (area fraction uniform in 0.08–1, log-uniform aspect ratio 3/4–4/3,
torchvision's algorithm with its 10 tries and centre fallback) then a horizontal flip with
probability 1/2. Evaluation: resize the shorter side to round(size / 0.875) (256 for 224, 342
for 299, torchvision's presets) then a centre crop. Both give uint8 (3, size, size) tensors;
:func:`normalize` maps a batch to float with the ImageNet mean and std on the training device,
so workers and pinned memory move a quarter of the bytes that float32 images would take.

Every random draw for one image comes from a generator derived from (augment_seed, index):
the crop of an image in an epoch is a pure function of the caller's seed and the image, not of
which worker decodes it or in what order. The draws (:func:`random_resized_crop_box`) are the
same for both backends; the decode and resize are Pillow's (always available) or
torchvision's (``backend="torchvision"``, when it imports). The two resize kernels differ by
rounding, so a run records ``transform.backend`` with its results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from harness.core.execution import DEFAULT_MAX_IMAGE_PIXELS
from harness.data.imagefolder import too_large
from harness.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)  # fraction of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # width / height
EVAL_CROP_FRACTION = 0.875  # centre crop side / resized shorter side

Backend = Literal["auto", "pillow", "torchvision"]


class UnreadableImageError(UserError):
    """An image that passed the scan's check failed to decode during training (its cell
    fails with this one line, which names the file and `execution.image_check`)."""


def sample_rng(augment_seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index``'s augmentation in the epoch of ``augment_seed``."""
    return np.random.default_rng([augment_seed, index])


def random_resized_crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) as torchvision's RandomResizedCrop.get_params."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Ten misses (very elongated images): the largest centre crop within the ratio range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def eval_resize_size(size: int) -> int:
    """Shorter side before the centre crop: 256 for 224, 342 for 299."""
    return round(size / EVAL_CROP_FRACTION)


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the shorter side ``short`` and the aspect kept, as torchvision."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def center_crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of a centred ``size`` square, rounded as torchvision's center_crop."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def torchvision_available() -> bool:
    """Whether torchvision imports here (its compiled ops can fail without CUDA libraries)."""
    try:
        import torchvision.io
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:  # ImportError, or OSError/RuntimeError from its compiled extension
        return False
    return True


def resolve_backend(backend: Backend) -> Literal["pillow", "torchvision"]:
    if backend == "auto":
        return "torchvision" if torchvision_available() else "pillow"
    if backend == "torchvision" and not torchvision_available():
        raise RuntimeError(
            "backend='torchvision' but torchvision does not import here; install the "
            "extra (pip install -e '.[vision]') or use backend='pillow'"
        )
    return backend


@dataclass(frozen=True)
class ImageTransform:
    """Decode one file to a uint8 (3, size, size) tensor, augmented (``train``) or not.

    ``draft`` (Pillow, train only): let libjpeg decode at 1/2, 1/4 or 1/8 scale whenever the
    crop still has at least ``size`` pixels per side after it, several times faster on large
    images. It changes pixels slightly (DCT-domain scaling), so it is off by default.

    ``max_pixels`` (``execution.max_image_pixels``): an image of more pixels is refused
    (`UnreadableImageError`) before it is decoded (Pillow; the scan of the folder has left
    such images out of N already, harness.data.imagefolder).
    """

    size: int
    train: bool
    backend: Literal["pillow", "torchvision"] = "pillow"
    draft: bool = False
    scale: tuple[float, float] = CROP_SCALE
    ratio: tuple[float, float] = CROP_RATIO
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __call__(self, path: Path, rng: np.random.Generator | None) -> Tensor:
        try:
            if self.backend == "torchvision":
                return self._torchvision(path, rng)
            return self._pillow(path, rng)
        except UnreadableImageError:
            raise
        except Exception as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise UnreadableImageError(
                f"{path}: cannot decode ({reason}); replace or remove the file, or set "
                "execution.image_check: decode in the suite (or --set "
                "execution.image_check=decode) so that the scan leaves such files out of N"
            ) from e

    def _pillow(self, path: Path, rng: np.random.Generator | None) -> Tensor:
        import warnings

        from PIL import Image

        with warnings.catch_warnings():  # our limit, not Pillow's warning, decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            img: Any = opened
            width, height = img.size
            big = too_large(width, height, self.max_pixels)
            if big is not None:
                raise UnreadableImageError(f"{path}: {big}; not decoded")
            if self.train:
                assert rng is not None
                top, left, h, w = random_resized_crop_box(
                    height, width, rng, self.scale, self.ratio
                )
                flip = bool(rng.integers(0, 2))
                if self.draft and img.format == "JPEG":
                    # Largest reduction that keeps the crop at least `size` on each side.
                    img.draft("RGB", (width * self.size // w, height * self.size // h))
                    # libjpeg scales by exactly 1/k, k in 1, 2, 4, 8 (sizes round up).
                    k = 2 ** round(math.log2(width / img.size[0]))
                    top, left, h, w = (
                        int(top / k),
                        int(left / k),
                        max(1, round(h / k)),
                        max(1, round(w / k)),
                    )
                img = img.convert("RGB")
                img = img.crop((left, top, left + w, top + h))
                img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
                if flip:
                    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                img = img.convert("RGB")
                rh, rw = resized_shape(height, width, eval_resize_size(self.size))
                img = img.resize((rw, rh), Image.Resampling.BILINEAR)
                top, left = center_crop_offsets(rh, rw, self.size)
                img = img.crop((left, top, left + self.size, top + self.size))
            # HWC → CHW in numpy (a writable copy): a per-image torch op would use torch's
            # thread pool, whose spin-waits stall on a loaded machine when num_workers = 0.
            array = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
        return torch.from_numpy(array)

    def _torchvision(self, path: Path, rng: np.random.Generator | None) -> Tensor:
        # Imported lazily: only image folders need torchvision, and it may not import at all.
        import torchvision.transforms.v2.functional as tvf
        from torchvision.io import ImageReadMode, decode_image, read_file

        img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        height, width = int(img.shape[-2]), int(img.shape[-1])
        if self.train:
            assert rng is not None
            top, left, h, w = random_resized_crop_box(height, width, rng, self.scale, self.ratio)
            flip = bool(rng.integers(0, 2))
            out = tvf.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
            return out.flip(-1).contiguous() if flip else out.contiguous()
        rh, rw = resized_shape(height, width, eval_resize_size(self.size))
        out = tvf.resize(img, [rh, rw], antialias=True)
        top, left = center_crop_offsets(rh, rw, self.size)
        return out[:, top : top + self.size, left : left + self.size].contiguous()


def normalize(
    images: Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    channels_last: bool = False,
) -> Tensor:
    """uint8 images (B, 3, H, W) → float32 (x/255 - mean) / std, on the images' device."""
    device = images.device
    shift = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    scale = 1.0 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0)
    out = images.float().sub_(shift).mul_(scale)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
