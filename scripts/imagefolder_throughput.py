"""Images per second of the ImageNet data path on this machine (decode, crop, resize, batch).

Writes a folder of JPEGs of ImageNet-like size (about 500x375, smooth content so that the
files are of ImageNet-like bytes), then times one training epoch of `FolderData` (random-
resized crop + flip to SIZE) and one pass of its evaluation (resize + centre crop) with 0, 1
and 2 DataLoader workers, on the CPU device (no copy to a GPU). The first epoch of each
loader is untimed (worker start-up, page cache); the next one is timed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/imagefolder_throughput.py --images 256

Prints one markdown row per (workers, path), with the machine's CPU count and load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.folder import FolderData
from harness.data.image_loader import open_image_folder


def write_folder(root: Path, images: int, classes: int = 4) -> float:
    """ROOT/{train,val}/<wnid>/*.JPEG; returns the mean file size in kB."""
    rng = np.random.default_rng(0)
    sizes = []
    for split, count in (("train", images), ("val", max(images // 4, classes))):
        for i in range(count):
            wnid = f"n{i % classes:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            w, h = (500, 375) if i % 3 else (375, 500)
            small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
            noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 3))
            path = folder / f"{wnid}_{i}.JPEG"
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            sizes.append(path.stat().st_size)
    return float(np.mean(sizes)) / 1000


def time_train(data: FolderData, batch: int, micro: int, epoch: int) -> float:
    steps = data.n_train // batch
    start = time.perf_counter()
    n = 0
    for step in data.epoch_batches(epoch, epoch + 100, batch, steps, micro):
        for x, _ in step.micro_batches:
            n += x.shape[0]
    return n / (time.perf_counter() - start)


def time_eval(data: FolderData, batch: int) -> float:
    start = time.perf_counter()
    n = sum(x.shape[0] for x, _ in data.test_batches(batch))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="training images written")
    parser.add_argument("--size", type=int, default=224, help="crop side (299: IRv2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--micro", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--draft", action="store_true", help="libjpeg draft decoding")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kb = write_folder(root, args.images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            folder = open_image_folder(root, args.size, backend="pillow", draft=args.draft)
        print(
            f"{platform.node()}: {os.cpu_count()} CPUs, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {folder.n_train} train / "
            f"{folder.n_val} val JPEGs of ~500x375, mean {kb:.0f} kB; crop {args.size} px, "
            f"Pillow {Image.__version__}, draft {args.draft}"
        )
        print("| workers | path | images/s |\n| --- | --- | --- |")
        for workers in args.workers:
            data = FolderData(folder, torch.device("cpu"), workers=workers)
            time_train(data, args.batch, args.micro, epoch=0)  # untimed: start-up, cache
            train = time_train(data, args.batch, args.micro, epoch=1)
            time_eval(data, args.micro)
            evaluation = time_eval(data, args.micro)
            print(f"| {workers} | train (random-resized crop + flip) | {train:.0f} |")
            print(f"| {workers} | eval (resize + centre crop) | {evaluation:.0f} |")
            del data


if __name__ == "__main__":
    main()
