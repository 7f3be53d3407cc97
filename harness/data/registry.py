"""Dataset kinds by name: how each is loaded and fetched (what each *is*: harness.core.datasets).

A kind held on the device (`storage: device`) registers a `read`, which gives its host arrays
(`HostData`); `load` puts them on the device as a `DeviceData`. A kind streamed from disk
(`storage: stream`) registers a `stream`, which gives its `DataSource` itself. A kind that
downloads registers `download` (`harness data NAME DEST`). A kind that builds its own source
held on the device (`storage: sequences`, harness.data.text) registers it as `source`.
`tests/test_datasets.py` checks that every descriptor has its entry here and every entry is
complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core.datasets import DATASETS, DatasetKind
from harness.data.arrays import read_arrays
from harness.data.cifar10 import HostData, read_cifar10, read_cifar100, read_synthetic
from harness.data.device import DeviceData
from harness.data.download import download_cifar10, download_cifar100
from harness.data.folder import open_folder
from harness.data.request import LoadRequest
from harness.data.source import DataSource
from harness.data.text import read_text, read_tokens


@dataclass(frozen=True)
class DatasetLoader:
    """One kind's implementation: `read` for a kind held on the device, `stream` for one
    streamed from disk, `source` for a token stream (its descriptor's `storage` says which),
    `download` where it fetches."""

    read: Callable[[LoadRequest], HostData] | None = None
    stream: Callable[[LoadRequest], tuple[DataSource, str]] | None = None
    download: Callable[[Path], Path] | None = None
    source: Callable[[LoadRequest], tuple[DataSource, str]] | None = None


LOADERS: dict[str, DatasetLoader] = {  # one entry per harness.core.datasets.DATASETS (a test)
    "cifar10": DatasetLoader(read=read_cifar10, download=download_cifar10),
    "cifar100": DatasetLoader(read=read_cifar100, download=download_cifar100),
    "imagenet": DatasetLoader(stream=open_folder),
    "imagefolder": DatasetLoader(stream=open_folder),
    "synthetic": DatasetLoader(read=read_synthetic),
    "arrays": DatasetLoader(read=read_arrays),
    "text": DatasetLoader(source=read_text),
    "tokens": DatasetLoader(source=read_tokens),
}


def register(kind: DatasetKind, loader: DatasetLoader) -> None:
    """Add a kind from outside the package (a plug-in, a test): its descriptor where suites
    are checked and its loader here, both under `kind.name`."""
    DATASETS[kind.name] = kind
    LOADERS[kind.name] = loader


def load(request: LoadRequest) -> tuple[DataSource, str]:
    """The suite's dataset on `request.device`, and which copy of it that is (the run row's
    `data_source`)."""
    spec = request.spec
    loader = LOADERS[spec.name]
    if DATASETS[spec.name].storage == "stream":
        assert loader.stream is not None
        return loader.stream(request)
    if DATASETS[spec.name].storage == "sequences":
        assert loader.source is not None
        return loader.source(request)
    host = read(request)
    data = DeviceData.from_arrays(
        host.arrays,
        request.device,
        channels_last=request.channels_last,
        augment=spec.augment,
        stats=host.stats,
    )
    return data, host.source


def read(request: LoadRequest) -> HostData:
    """A kind held on the device, on the host (`harness bench` times steps on its arrays)."""
    read = LOADERS[request.spec.name].read
    assert read is not None, f"{request.spec.name} is streamed from disk, not read whole"
    return read(request)


def download(name: str, dest: Path) -> Path:
    """`harness data NAME DEST`: fetch kind `name` into DEST; the folder it is in."""
    fetch = LOADERS[name].download
    assert fetch is not None, f"{name} downloads nothing"
    return fetch(dest)
