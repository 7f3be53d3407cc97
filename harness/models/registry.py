"""Models by name: suites name a model and its integer parameters, tests loop over every entry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from harness.core.factory_spec import FactoryRef
from harness.errors import UserError
from harness.models.factory import build_factory_model
from harness.models.gpt import GPT
from harness.models.inception_resnet import InceptionResNetV2
from harness.models.resnet import ResNet50
from harness.models.small_cnn import SmallCNN
from harness.models.wrn import WideResNet


@dataclass(frozen=True)
class ModelFactory:
    """How to build one registered model from its user-facing parameters.

    ``build`` receives every param by keyword plus ``num_classes`` and ``ghost_size``.
    ``required`` params must be given; ``optional`` ones fall back to ``build``'s default.
    Every param is a positive integer but the ``flags``, which are booleans (and optional).
    """

    build: Callable[..., nn.Module]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    description: str = ""
    flags: tuple[str, ...] = ()
    # The image channels its first layer takes (the image models: RGB); None: it takes no
    # images (gpt reads token ids).
    channels: int | None = 3

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional + self.flags


MODELS: dict[str, ModelFactory] = {  # one entry per core.kinds.MODEL_NAMES (a test checks)
    "small_cnn": ModelFactory(
        build=SmallCNN,
        optional=("width",),
        description="3-stage conv-GBN-ReLU net (73k params at width 16), for CPU suites",
    ),
    "wrn": ModelFactory(
        build=WideResNet,
        required=("depth", "width"),
        description="Wide ResNet WRN-depth-width (the paper uses WRN-16-4 on CIFAR-10)",
    ),
    "inception_resnet_v2": ModelFactory(
        build=InceptionResNetV2,
        optional=("blocks_a", "blocks_b", "blocks_c", "width_divisor"),
        description="Inception-ResNet-V2 as released (TF-slim/timm: 10/20/10 blocks, 55.8M "
        "params), the paper's ImageNet model; inputs >= 75x75 (299 in the paper)",
    ),
    "resnet50": ModelFactory(
        build=ResNet50,
        optional=("width", "max_blocks"),
        flags=("zero_init_residual",),
        description="ResNet-50 v1.5 as torchvision (25.6M params); width 64, max_blocks caps "
        "the 3/4/6/3 blocks per stage for tests",
    ),
    "gpt": ModelFactory(
        build=GPT,
        required=("n_layer", "n_head", "n_embd", "block_size"),
        description="a small decoder-only transformer (pre-LN, causal SDPA, tied embeddings) "
        "for the text and tokens datasets",
        channels=None,
    ),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def input_size(name: str) -> int | None:
    """The image side model ``name`` is made for (``input_size`` of its class), if it says."""
    factory = MODELS.get(name)
    size = getattr(factory.build, "input_size", None) if factory is not None else None
    return size if isinstance(size, int) else None


def input_channels(name: str) -> int | None:
    """The image channels model ``name`` takes, if it is a registered one (a model from the
    user's own code says nothing before it is built)."""
    factory = MODELS.get(name)
    return None if factory is None else factory.channels


def build_model(
    name: str,
    params: Mapping[str, Any],
    *,
    num_classes: int,
    ghost_size: int,
    factory: FactoryRef | None = None,
) -> nn.Module:
    """Build registered model ``name``; bad names and params raise :class:`UserError`.

    With `factory`, the user's own model (harness.models.factory) under the suite's name
    `name`, its batch norms made ghost batch norms; `params` is then empty.
    """
    if factory is not None:
        return build_factory_model(factory, num_classes=num_classes, ghost_size=ghost_size)[0]
    entry = MODELS.get(name)
    if entry is None:
        raise UserError(f"model.name: unknown model {name!r}; choose one of: {_join(MODELS)}")
    accepted = _join(entry.params) if entry.params else "(none)"
    for key, value in params.items():
        if key not in entry.params:
            raise UserError(
                f"model.{key}: unknown parameter for model {name!r}; accepted: {accepted}"
            )
        if key in entry.flags:
            if not isinstance(value, bool):
                raise UserError(f"model.{key}: must be true or false, got {value!r}")
            continue
        # bool is an int subclass; `width: true` in YAML is a mistake, not width 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model.{key}: must be a positive integer, got {value!r}")
    missing = [key for key in entry.required if key not in params]
    if missing:
        raise UserError(
            f"model.{missing[0]}: required for model {name!r}; give all of: {_join(entry.required)}"
        )
    return entry.build(**params, num_classes=num_classes, ghost_size=ghost_size)


def _join(names: Mapping[str, Any] | tuple[str, ...]) -> str:
    return ", ".join(sorted(names))
