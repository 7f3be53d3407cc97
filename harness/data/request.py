"""What loading a dataset kind is given: the suite's `dataset:` and where the data goes.

The app layer fills a `LoadRequest` (from the suite, its cells' models and the command line);
each kind's loader (harness.data.registry) reads what it needs of it. No suite type here: the
data layer sees the `dataset:` fields through `harness.core.datasets.DatasetFields`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.datasets import DatasetFields
from harness.core.execution import Execution
from harness.errors import UserError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LoadRequest:
    """One loading of a dataset.

    `data_root`: --data (None: $HARNESS_DATA). `image_size`: for a kind that crops, the side
    to crop to (the suite's `dataset.image_size`, else the side its models agree on).
    `takes`: the image channels the models take and the model that says so, when one does.
    `where`: the suite file, for messages. `execution`: the image checks and loader workers.
    """

    spec: DatasetFields
    data_root: Path | None
    device: torch.device
    channels_last: bool = False
    execution: Execution = field(default_factory=Execution)
    image_size: int | None = None
    takes: tuple[int, str] | None = None
    where: str = "suite"

    @property
    def root(self) -> Path:
        """The data folder: --data, else $HARNESS_DATA."""
        return resolve_data_root(self.data_root)


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
