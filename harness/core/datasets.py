"""What each dataset kind is, by name: sizes, classes, images, where it is held, its fields.

A suite's `dataset: {name: ...}` is checked against these descriptors (the config layer),
`harness plan`, `convert` and the estimates read their sizes, and `harness data NAME` exists
for each kind that downloads; all without torch. How a kind is loaded, fetched and audited is
its implementation, registered under the same name in `harness.data.registry` (and, for a
new way of holding data, `harness.train.audit.AUDITS`); `tests/test_datasets.py` keeps the
two registries equal and every entry complete. A new kind is one descriptor here and one
loader there (docs/ARCHITECTURE.md, "How to add a dataset").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from harness.core.sequences import TEXT_FIX, TOKENS_FIX, text_counts, token_counts

# Where a kind's examples live while training: "device", decoded once and held on the device
# (harness.data.device.DeviceData); "stream", read from disk step by step by DataLoader
# workers (harness.data.folder.FolderData); "sequences", a token stream held on the device and
# cut into language-model examples (harness.data.text.SequenceData, harness.core.sequences).
Storage = Literal["device", "stream", "sequences"]
STORAGES: tuple[Storage, ...] = get_args(Storage)

# The keys of a suite's `dataset:` that only some kinds take (`DatasetKind.takes`); name,
# train_size, test_size and augment every kind takes.
DatasetField = Literal[
    "path", "image_size", "classes", "mean", "std", "block_size", "vocab_size", "held_out"
]
DATASET_FIELDS: tuple[DatasetField, ...] = get_args(DatasetField)


@dataclass(frozen=True)
class DatasetKind:
    """One dataset kind, as everything before training needs it.

    `train_size` / `test_size` / `classes`: the full dataset's, where the kind fixes them
    (None: the suite gives them, or they are counted when the data loads). `image_side`: the
    side of its square images (None: the crop side, `dataset.image_size` or the model's, or
    the file's). `needs`: the fields a suite must give, each with the fix its error names.
    `download`: the folder `harness data NAME` fetches into (None: nothing to fetch).
    `sorted_by_class`: its training images are stored class by class, so the first few (what
    precise batch-norm statistics read) are not a sample of the whole. `counts`: for a kind
    whose sizes follow from its files and the suite's fields (a sequence kind's N depends on
    `block_size`), (training, test) examples from the files' sizes alone, without reading
    them; its ValueError is the one line of a missing file.
    """

    name: str
    title: str  # in messages: "CIFAR-10"
    about: str  # what it is, in one line
    storage: Storage = "device"
    train_size: int | None = None
    test_size: int | None = None
    classes: int | None = None
    image_side: int | None = 32
    channels: int | None = 3
    takes: tuple[DatasetField, ...] = ()
    needs: tuple[tuple[str, str], ...] = ()
    download: str | None = None
    sorted_by_class: bool = False
    counts: Callable[[DatasetFields], tuple[int, int]] | None = None

    @property
    def sized_only(self) -> bool:
        """Whether a suite names it with its sizes alone (no file, classes or statistics of
        the user's): what `harness convert` and `harness bench` may choose."""
        return {need for need, _ in self.needs} <= {"train_size", "test_size"}

    @property
    def crops(self) -> bool:
        """Whether its images are cropped to a side the suite or the model chooses."""
        return "image_size" in self.takes


class DatasetFields(Protocol):
    """A suite's `dataset:` as a loader reads it (harness.config.schema.DatasetSpec is one)."""

    @property
    def name(self) -> str: ...
    @property
    def train_size(self) -> int | None: ...
    @property
    def test_size(self) -> int | None: ...
    @property
    def augment(self) -> bool: ...
    @property
    def path(self) -> str | None: ...
    @property
    def image_size(self) -> int | None: ...
    @property
    def classes(self) -> int | None: ...
    @property
    def mean(self) -> tuple[float, ...] | None: ...
    @property
    def std(self) -> tuple[float, ...] | None: ...
    @property
    def block_size(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def held_out(self) -> float | None: ...
    @property
    def n_train(self) -> int:
        """N: train_size, else the kind's full training set."""
        ...


_FOLDER_SIZE = (
    "the schedules are planned for N training images: give train_size (the number of images "
    "under train/; `harness run` names the folder's count if it differs)"
)


def _text_counts(spec: DatasetFields) -> tuple[int, int]:
    assert spec.path is not None and spec.block_size is not None  # both needed
    return text_counts(spec.path, spec.block_size, spec.held_out)


def _token_counts(spec: DatasetFields) -> tuple[int, int]:
    assert spec.path is not None and spec.block_size is not None  # both needed
    return token_counts(spec.path, spec.block_size)


_BLOCK = (
    "block_size",
    "give block_size, the tokens of one example (the model's context, e.g. 64); N is the "
    "training text's windows of that many",
)

DATASETS: dict[str, DatasetKind] = {  # one loader each in harness.data.registry (a test checks)
    "cifar10": DatasetKind(
        "cifar10",
        "CIFAR-10",
        "CIFAR-10's python batches: 50000 + 10000 32x32 images, 10 classes (the paper's)",
        train_size=50_000,
        test_size=10_000,
        classes=10,
        download="cifar-10-batches-py",
    ),
    "cifar100": DatasetKind(
        "cifar100",
        "CIFAR-100",
        "CIFAR-100's python folder: 50000 + 10000 32x32 images, its 100 fine labels",
        train_size=50_000,
        test_size=10_000,
        classes=100,
        download="cifar-100-python",
    ),
    "imagenet": DatasetKind(
        "imagenet",
        "ImageNet",
        "ImageNet's train/<wnid>/ and val/ folders, streamed from disk (the paper's)",
        storage="stream",
        train_size=1_281_167,
        test_size=50_000,
        classes=1000,
        image_side=None,
        takes=("path", "image_size"),
        sorted_by_class=True,
    ),
    "imagefolder": DatasetKind(
        "imagefolder",
        "image folder",
        "any class-per-folder tree of images (DIR/train/<class>/, DIR/val/<class>/), read as "
        "ImageNet is",
        storage="stream",
        image_side=None,
        takes=("path", "image_size", "classes"),
        needs=(
            ("path", "name the folder that holds train/ and val/"),
            ("classes", "give the number of class folders under train/"),
            ("train_size", _FOLDER_SIZE),
        ),
    ),
    "synthetic": DatasetKind(
        "synthetic",
        "synthetic",
        "random 32x32 images and labels of the sizes given, for tests (no files)",
        classes=10,
        needs=(
            ("train_size", "a synthetic dataset needs train_size and test_size"),
            ("test_size", "a synthetic dataset needs train_size and test_size"),
        ),
    ),
    "arrays": DatasetKind(
        "arrays",
        "arrays",
        "your own images and labels: an .npz of train_x, train_y, test_x, test_y",
        image_side=None,
        channels=None,
        takes=("path", "classes", "mean", "std"),
        needs=(
            ("path", "name the .npz file (train_x, train_y, test_x, test_y)"),
            ("classes", "give the number of classes (labels 0..classes-1)"),
            (
                "train_size",
                "the schedules are planned for N training images: give train_size (the "
                "first N of train_x; `harness run` names the file's count if it differs)",
            ),
        ),
    ),
    "text": DatasetKind(
        "text",
        "text",
        "any UTF-8 text file as bytes (a vocabulary of 256), its last 10 % held out (held_out), "
        "cut into windows of block_size (harness.core.sequences)",
        storage="sequences",
        classes=256,
        image_side=None,
        channels=None,
        takes=("path", "block_size", "held_out"),
        needs=(("path", TEXT_FIX), _BLOCK),
        counts=_text_counts,
    ),
    "tokens": DatasetKind(
        "tokens",
        "token files",
        "token ids in nanoGPT's layout: DIR/train.bin and DIR/val.bin of uint16, vocab_size "
        "stated, cut into windows of block_size (harness.core.sequences)",
        storage="sequences",
        classes=None,
        image_side=None,
        channels=None,
        takes=("path", "block_size", "vocab_size"),
        needs=(
            ("path", TOKENS_FIX),
            _BLOCK,
            ("vocab_size", "give vocab_size, the tokenizer's number of ids (ids 0..vocab_size-1)"),
        ),
        counts=_token_counts,
    ),
}


def unknown(name: str) -> str:
    """The one line for a dataset name no kind has."""
    return f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"


def takers(field: str) -> str:
    """The kinds that take `field`, by name: "imagenet, imagefolder or arrays"."""
    names = [kind.name for kind in DATASETS.values() if field in kind.takes]
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))
