"""A suite's dataset for its cells: which cells share one loading, and the request for it.

What is particular to each dataset kind is its loader's (harness.data.registry); this module
adds what only the suite knows: the crop side its models agree on, the image channels they
take, the execution settings and the suite file for messages.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config.suite import Cell, Suite
from harness.data import registry
from harness.data.request import LoadRequest
from harness.data.source import DataSource
from harness.errors import UserError
from harness.models.registry import input_channels, input_size


def data_groups(suite: Suite, cells: tuple[Cell, ...]) -> list[tuple[Cell, ...]]:
    """The cells in groups that train on one loading of the data, in the order given.

    One group but for a kind that crops (an image folder) without `dataset.image_size` whose
    models crop to different sides (ResNet-50 at 224 px beside Inception-ResNet-V2 at 299):
    then one group per side, each with the folder opened at its size, in the order of each
    size's first cell.
    """
    if not suite.spec.dataset.kind.crops or suite.spec.dataset.image_size is not None:
        return [cells]
    groups: dict[int | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(input_size(cell.model.name), []).append(cell)
    return [tuple(group) for group in groups.values()]


def load_data(
    suite: Suite,
    data_root: Path | None,
    device: torch.device,
    channels_last: bool,
    cells: tuple[Cell, ...] | None = None,
) -> tuple[DataSource, str]:
    """The suite's dataset on `device`, and which copy of it that is (the row's data_source).

    `cells` (default: all the suite's): the cells it is for; a kind that crops, without
    `dataset.image_size`, is cropped to their models' side (`data_groups` makes them agree).
    """
    cells = suite.cells if cells is None else cells
    ds = suite.spec.dataset
    request = LoadRequest(
        spec=ds,
        data_root=data_root,
        device=device,
        channels_last=channels_last,
        execution=suite.spec.execution,
        image_size=_crop_side(suite, cells) if ds.kind.crops else None,
        takes=_channels_taken(cells),
        where=str(suite.path),
    )
    return registry.load(request)


def _crop_side(suite: Suite, cells: tuple[Cell, ...]) -> int:
    """`dataset.image_size`, else the one input side the cells' models state."""
    if suite.spec.dataset.image_size is not None:
        return suite.spec.dataset.image_size
    sizes = {input_size(cell.model.name) for cell in cells}
    if None in sizes:  # a model from your own code (factory:) states no input side
        raise UserError(
            f"{suite.path}: dataset.image_size: a model of this suite states no input size "
            "(e.g. one from factory:); set image_size (e.g. 224)"
        )
    if len(sizes) != 1:
        raise UserError(
            f"{suite.path}: dataset.image_size: the suite's models crop to different sizes "
            f"({', '.join(sorted(str(s) for s in sizes))} px); set one image_size"
        )
    size = sizes.pop()
    assert size is not None
    return size


def _channels_taken(cells: tuple[Cell, ...]) -> tuple[int, str] | None:
    """The image channels the cells' models take, and the first model that says so (a model
    from the user's own code says nothing until built; then the first step would tell)."""
    for cell in cells:
        channels = input_channels(cell.model.name)
        if channels is not None:
            return channels, f"{cell.model_name!r} ({cell.model.name})"
    return None
