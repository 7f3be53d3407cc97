"""Models: ghost batch norm, Wide ResNet (the paper's CIFAR-10 network) and a small CPU model.

Every normalization layer is a :class:`GhostBatchNorm2d`, so a model's gradient for one ghost
slice does not depend on how many slices share the batch (Smith et al. 2018, section 5.1; Hoffer
et al. 2017). That is what lets a step of B examples run as micro-batches whose gradients are
averaged: each micro-batch is a whole number of ghost slices.

Models are built by name through :data:`MODELS` / :func:`build_model`, so tests can loop over
every entry and suites can name a model without importing its class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError

__all__ = [
    "MODELS",
    "GhostBatchNorm2d",
    "ModelFactory",
    "SmallCNN",
    "WideResNet",
    "build_model",
    "model_names",
]


class GhostBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that, in training, normalizes each slice of ``ghost_size`` examples alone.

    Training-mode contract, for an input of N examples:

    * The batch is cut along dim 0 into contiguous slices of ``ghost_size`` examples. If N is not
      a multiple of ``ghost_size`` the leftover examples form one extra, smaller slice; if
      ``N <= ghost_size`` the whole batch is one slice.
    * Each slice is normalized with its own mean and biased variance over (examples, H, W), so
      output and gradients equal those of ``nn.BatchNorm2d`` applied to that slice alone.
    * Running statistics are updated once per forward call, with ``momentum`` as in
      ``nn.BatchNorm2d``, from the *unweighted mean over slices* of each slice's mean and of each
      slice's **unbiased** variance (the remainder slice counts as one slice like the others).
      With equal-size slices this is what averaging the running-stat updates of the slices,
      taken as separate batches, would give to first order.

    Eval mode (with running statistics) is exactly ``nn.BatchNorm2d``. Statistics are computed
    in float32 whatever the input dtype (bf16 under autocast), and the output has the input's
    dtype. Channels-last inputs stay channels-last without a copy.
    """

    def __init__(
        self,
        num_features: int,
        ghost_size: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            device=device,
            dtype=dtype,
        )
        if ghost_size < 1:
            raise ValueError(f"ghost_size must be a positive integer, got {ghost_size}")
        self.ghost_size = ghost_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_size={self.ghost_size}"

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training and self.running_mean is not None:
            return self._eval_forward(input)
        return self._ghost_forward(input)

    def _eval_forward(self, x: Tensor) -> Tensor:
        assert self.running_mean is not None and self.running_var is not None
        # F.batch_norm does not accept every mix of a low-precision input with float32
        # parameters on every backend, so mixed dtypes go through float32.
        mixed = self.weight is not None and x.dtype != self.weight.dtype
        out = F.batch_norm(
            x.float() if mixed else x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            False,
            0.0,
            self.eps,
        )
        return out.to(x.dtype)

    def _ghost_forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        g = min(self.ghost_size, n)
        full = (n // g) * g
        with torch.autocast(device_type=x.device.type, enabled=False):
            if full == n:
                y, means, unbiased_vars = self._normalize_slices(x, g)
            else:
                # Two pieces: the full slices in one vectorized pass, the remainder as one more
                # slice, written into one buffer shaped like x. (torch.cat would not do: a
                # one-example remainder has an ambiguous layout and makes it drop channels-last.)
                y_full, m_full, v_full = self._normalize_slices(x[:full], g)
                y_rest, m_rest, v_rest = self._normalize_slices(x[full:], n - full)
                y = torch.empty_like(x, dtype=y_full.dtype)
                y[:full] = y_full
                y[full:] = y_rest
                means = torch.cat([m_full, m_rest])
                unbiased_vars = torch.cat([v_full, v_rest])
        self._update_running_stats(means, unbiased_vars)
        return y.to(x.dtype)

    def _normalize_slices(self, x: Tensor, g: int) -> tuple[Tensor, Tensor, Tensor]:
        """Normalize ``x`` (a multiple of ``g`` examples) per slice of ``g``.

        Returns the output (N, C, H, W) in at least float32 and, per slice, the mean and
        unbiased variance as (S, C) tensors detached from the graph.
        """
        n, c, h, w = x.shape
        # At least float32; float64 stays float64 so that exactness tests can be tight.
        dtype = torch.promote_types(x.dtype, torch.float32)
        # Splitting dim 0 is a view for contiguous and channels-last layouts alike, and the
        # elementwise ops below keep the input's layout, so the final view back is legal too.
        xs = x.to(dtype).view(n // g, g, c, h, w)
        var, mean = torch.var_mean(xs, dim=(1, 3, 4), correction=0, keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(dtype).view(1, 1, c, 1, 1)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.to(dtype).view(1, 1, c, 1, 1)
        y = torch.addcmul(shift, xs, scale).view(n, c, h, w)
        count = g * h * w
        with torch.no_grad():
            slice_means = mean.detach().view(-1, c)
            # A slice of one value has no unbiased variance; nn.BatchNorm2d refuses it in
            # training, and here it only contributes a zero rather than a NaN to the average.
            bessel = count / (count - 1) if count > 1 else 0.0
            slice_vars = var.detach().view(-1, c) * bessel
        return y, slice_means, slice_vars

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, unbiased_vars: Tensor) -> None:
        if not (self.training and self.track_running_stats):
            return
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        # momentum=None means a cumulative moving average, as in nn.BatchNorm2d.
        momentum = self.momentum
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
        self.running_mean.lerp_(means.mean(0).to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_vars.mean(0).to(self.running_var.dtype), factor)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class _PreActBlock(nn.Module):
    """WRN basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut.

    As in the official WRN code, a projection shortcut (1x1 conv) reads the *pre-activated*
    input, while an identity shortcut reads the raw input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, ghost_size: int) -> None:
        super().__init__()
        self.bn1 = GhostBatchNorm2d(c_in, ghost_size)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = GhostBatchNorm2d(c_out, ghost_size)
        self.conv2 = _conv3x3(c_out, c_out)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o1 = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o1))))
        return y + (x if self.shortcut is None else self.shortcut(o1))


WRN_DEPTHS_HINT = "10, 16, 22, 28, 40, ... (depth = 6n + 4)"


class WideResNet(nn.Module):
    """WRN-depth-width of Zagoruyko & Komodakis (2016), as in their official code; no dropout.

    conv3x3(3→16), three groups of n = (depth - 4) / 6 pre-activation blocks with widths
    16k, 32k, 64k and strides 1, 2, 2, then BN-ReLU, global average pool and a linear layer.
    WRN-16-4 (the paper's CIFAR-10 model) has 2,748,890 parameters.
    """

    def __init__(
        self, depth: int, width: int, num_classes: int = 10, ghost_size: int = 128
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise UserError(
                f"model.depth: {depth} is not a valid WRN depth; use one of {WRN_DEPTHS_HINT}"
            )
        if width < 1:
            raise UserError(f"model.width: must be a positive integer, got {width}")
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.depth = depth
        self.width = width
        self.conv0 = _conv3x3(3, 16)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in zip(widths, (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(_PreActBlock(c_in, c_out, stride if i == 0 else 1, ghost_size))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = GhostBatchNorm2d(c_in, ghost_size)
        self.fc = nn.Linear(c_in, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.conv0(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SmallCNN(nn.Module):
    """A fast CPU model for smoke suites: three stages of conv-GBN-ReLU, each ending in a pool.

    Stage widths w, 2w, 4w with two convs each; max-pool after each stage, then global average
    pool and a linear layer. 72,954 parameters at w = 16; on a 5000-image CIFAR-10 subset it
    reaches ~40-47% test accuracy after 3 epochs (SGD, Nesterov 0.9, lr 0.05, batch 128), at
    ~10 s per epoch on two CPU cores.
    """

    def __init__(self, width: int = 16, num_classes: int = 10, ghost_size: int = 128) -> None:
        super().__init__()
        if width < 1:
            raise UserError(f"model.width: must be a positive integer, got {width}")
        w = width

        def unit(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                _conv3x3(c_in, c_out),
                GhostBatchNorm2d(c_out, ghost_size),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *unit(3, w),
            *unit(w, w),
            nn.MaxPool2d(2),
            *unit(w, 2 * w),
            *unit(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *unit(2 * w, 4 * w),
            *unit(4 * w, 4 * w),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(4 * w, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _init_weights(model: nn.Module) -> None:
    # Linear weights keep PyTorch's default init; only their bias is zeroed.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class ModelFactory:
    """How to build one registered model from its user-facing parameters.

    ``build`` receives every param by keyword plus ``num_classes`` and ``ghost_size``.
    ``required`` params must be given; ``optional`` ones fall back to ``build``'s default.
    Every param is a positive integer.
    """

    build: Callable[..., nn.Module]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    description: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional


MODELS: dict[str, ModelFactory] = {
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
}


def model_names() -> list[str]:
    return sorted(MODELS)


def build_model(
    name: str, params: Mapping[str, Any], *, num_classes: int, ghost_size: int
) -> nn.Module:
    """Build registered model ``name``; bad names and params raise :class:`UserError`."""
    factory = MODELS.get(name)
    if factory is None:
        raise UserError(f"model.name: unknown model {name!r}; choose one of: {_join(MODELS)}")
    accepted = _join(factory.params) if factory.params else "(none)"
    for key, value in params.items():
        if key not in factory.params:
            raise UserError(
                f"model.{key}: unknown parameter for model {name!r}; accepted: {accepted}"
            )
        # bool is an int subclass; `width: true` in YAML is a mistake, not width 1.
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model.{key}: must be a positive integer, got {value!r}")
    missing = [key for key in factory.required if key not in params]
    if missing:
        raise UserError(
            f"model.{missing[0]}: required for model {name!r}; give all of: "
            f"{_join(factory.required)}"
        )
    return factory.build(**params, num_classes=num_classes, ghost_size=ghost_size)


def _join(names: Mapping[str, Any] | tuple[str, ...]) -> str:
    return ", ".join(sorted(names))
