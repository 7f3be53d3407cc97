"""Ghost batch norm for any model: every ``nn.BatchNorm1d/2d/3d`` of it replaced in place.

`ghost_bn(model, ghost_size)` (public as ``harness.ghost_bn``) swaps each plain batch norm for
the harness's ghost batch norm (harness.models.ghost_bn) of the same features, eps, momentum,
affinity and statistics tracking; the weight and bias *are* the originals (the same
``Parameter`` objects) and the running buffers are copied, so a converted model evaluates
exactly as before and, in training, normalizes each slice of ``ghost_size`` examples alone.
The harness's own ghost batch norms are kept, set to ``ghost_size``. ``nn.SyncBatchNorm``,
subclasses of the batch norms, ``GroupNorm``, ``LayerNorm`` and instance norms are left alone
(they are not per-batch statistics of a slice, or not ours to reinterpret); `convert` says
which it found, for the run's one-line note.

1d and 3d inputs are normalized as the 2d layer does once their trailing dims are flattened:
(N, C), (N, C, L) and (N, C, D, H, W) are viewed as (N, C, L', 1) in training, and evaluation
is ``F.batch_norm`` on the input as it comes, as ``nn.BatchNorm1d/3d`` do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import Tensor, nn

from harness.models.ghost_bn import GhostBatchNorm2d

_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Normalizations a model may hold that stay as they are (named in the note).
_LEFT_ALONE = (
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LocalResponseNorm,
)


class GhostBatchNorm1d(GhostBatchNorm2d):
    """`GhostBatchNorm2d` for the inputs of ``nn.BatchNorm1d``: (N, C) or (N, C, L)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        return _flattened_forward(self, input)


class GhostBatchNorm3d(GhostBatchNorm2d):
    """`GhostBatchNorm2d` for the inputs of ``nn.BatchNorm3d``: (N, C, D, H, W)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        return _flattened_forward(self, input)


def _flattened_forward(layer: GhostBatchNorm2d, input: Tensor) -> Tensor:
    layer._check_input_dim(input)
    if not layer.training and layer.running_mean is not None:
        return layer._eval_forward(input)
    shape = input.shape
    flat = input.reshape(shape[0], shape[1], -1, 1)
    return layer._ghost_forward(flat).reshape(shape)


_GHOST_OF: dict[type[nn.Module], type[GhostBatchNorm2d]] = {
    nn.BatchNorm1d: GhostBatchNorm1d,
    nn.BatchNorm2d: GhostBatchNorm2d,
    nn.BatchNorm3d: GhostBatchNorm3d,
}


@dataclass(frozen=True)
class Conversion:
    """What `convert` did to a model."""

    converted: int  # plain batch norms replaced
    kept: int  # the harness's own ghost batch norms (set to the ghost size)
    left_alone: tuple[str, ...]  # "LayerNorm x2": other normalizations, untouched

    def note(self, ghost_size: int) -> str:
        """One line for the run's log."""
        others = f"; left alone: {', '.join(self.left_alone)}" if self.left_alone else ""
        if self.converted == 0 and self.kept == 0:
            return f"no batch norm to make ghost: the model trains unchanged{others}"
        parts = [f"{self.converted} batch norm(s) made ghost batch norms"]
        if self.kept:
            parts.append(f"{self.kept} ghost batch norm(s) kept")
        return f"{', '.join(parts)} (ghost size {ghost_size}){others}"


def ghost_bn(model: nn.Module, ghost_size: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` of `model` by a ghost batch norm, in place.

    Returns `model`. Weights are the same parameters and the running statistics are copied,
    so outputs in eval mode are unchanged; in train mode each slice of `ghost_size` examples
    is normalized alone. ``SyncBatchNorm``, ``GroupNorm``, ``LayerNorm`` and other
    normalizations are left alone.
    """
    convert(model, ghost_size)
    return model


def convert(model: nn.Module, ghost_size: int) -> Conversion:
    """`ghost_bn`, saying what it did."""
    if isinstance(ghost_size, bool) or not isinstance(ghost_size, int) or ghost_size < 1:
        raise ValueError(f"ghost_size must be a positive integer, got {ghost_size!r}")
    if type(model) in _GHOST_OF:
        raise ValueError(
            "ghost_bn converts the batch norms inside a model; wrap a lone batch norm in a "
            "module (e.g. nn.Sequential) first"
        )
    converted = kept = 0
    others: Counter[str] = Counter()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            ghost = _GHOST_OF.get(type(child))
            if ghost is not None:
                setattr(parent, name, _ghost_of(child, ghost, ghost_size))  # type: ignore[arg-type]
                converted += 1
            elif isinstance(child, GhostBatchNorm2d):
                child.ghost_size = ghost_size
                kept += 1
            elif isinstance(child, (*_LEFT_ALONE, *_PLAIN)):
                others[type(child).__name__] += 1
    left = tuple(f"{name} x{count}" for name, count in sorted(others.items()))
    return Conversion(converted, kept, left)


def _ghost_of(
    bn: nn.modules.batchnorm._BatchNorm, kind: type[GhostBatchNorm2d], ghost_size: int
) -> GhostBatchNorm2d:
    reference = bn.weight if bn.weight is not None else bn.running_mean
    ghost = kind(
        bn.num_features,
        ghost_size,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device=None if reference is None else reference.device,
        dtype=None if reference is None else reference.dtype,
    )
    if bn.affine:
        ghost.weight = bn.weight
        ghost.bias = bn.bias
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        old = getattr(bn, buffer)
        if old is not None:
            getattr(ghost, buffer).copy_(old)
    ghost.train(bn.training)
    return ghost
