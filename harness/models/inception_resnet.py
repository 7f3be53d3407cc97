"""Inception-ResNet-V2 (Szegedy et al. 2017) with ghost batch norm: the paper's ImageNet model.

Smith et al. (2018, Sec 5.3) train Inception-ResNet-V2 with ghost batch size 32 or 64. The
reference followed here is the released TF-slim model as ported by timm
(``timm.models.inception_resnet_v2``), not the paper's Figure 9. The released model, the one
whose accuracy the literature quotes, has an Inception-v3-style stem ending in a "Mixed_5b"
block, 10 / 20 / 10 Inception-ResNet-A / B / C blocks and residual trunks of 320 / 1088 / 2080
channels, where the paper's figures draw the Inception-v4 stem, 5 / 10 / 5 blocks and trunks of
384 / 1154 / 2048. The branches inside the blocks, the residual scales (0.17, 0.10, 0.20), the
two reductions, the final 1x1 conv to 1536 channels and the 0.8 keep-probability dropout agree.
With 1000 classes it has 55,843,464 parameters, timm's count exactly (Keras's
``InceptionResNetV2`` has the same layers but batch norms without a scale, 30,272 fewer).
``blocks_a`` / ``blocks_b`` / ``blocks_c`` = 5 / 10 / 5 gives Figure 9's depths on the
released widths (33,782,664 parameters).

Every batch norm is a ``GhostBatchNorm2d`` with the reference's eps 0.001 and PyTorch's
momentum 0.1 (timm's; TF-slim's decay 0.9997 per step was tuned for per-replica batches of 32).
Convolutions use "valid" padding where the reference does, so 75x75 is the smallest input
(299x299 is the paper's resolution).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d

BN_EPS = 1e-3
DROPOUT = 0.2  # the paper's "keep probability 0.8" before the classifier
MIN_INPUT = 75


class _Channels:
    """Channel counts of the reference divided by ``width_divisor`` (at least 1 each)."""

    def __init__(self, divisor: int) -> None:
        self.divisor = divisor

    def __call__(self, c: int) -> int:
        return max(1, c // self.divisor)


class _ConvBN(nn.Module):
    """Conv (no bias) - GBN - ReLU: the reference's ``BasicConv2d``."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        ghost_size: int,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = GhostBatchNorm2d(c_out, ghost_size, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class _Branches(nn.Module):
    """Parallel branches whose outputs are concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class _Residual(nn.Module):
    """Inception-ResNet block: x + scale · conv1x1(concat(branches)), then ReLU (not in the last).

    The 1x1 "up" projection back to the input width has a bias and no batch norm, as in the
    reference; the scale damps the residual so that very deep stacks train stably.
    """

    def __init__(
        self, c: int, branches: _Branches, c_cat: int, scale: float, relu: bool = True
    ) -> None:
        super().__init__()
        self.scale = scale
        self.branches = branches
        self.up = nn.Conv2d(c_cat, c, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.up(self.branches(x)) * self.scale
        return out if self.relu is None else self.relu(out)


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-V2 with ghost batch norm; the block counts and a width divisor are knobs.

    ``blocks_a`` / ``blocks_b`` / ``blocks_c``: Inception-ResNet-A (35x35 grid at 299 input,
    scale 0.17), B (17x17, scale 0.10) and C (8x8, scale 0.20) blocks; the last C block has no
    ReLU, as in the reference. ``width_divisor`` divides every channel count (tests only;
    1 is the real network). Dropout 0.2 before the classifier.
    """

    input_size: ClassVar[int] = 299  # the side the data path should crop to

    def __init__(
        self,
        blocks_a: int = 10,
        blocks_b: int = 20,
        blocks_c: int = 10,
        width_divisor: int = 1,
        num_classes: int = 1000,
        ghost_size: int = 32,
    ) -> None:
        super().__init__()
        for name, value in (
            ("blocks_a", blocks_a),
            ("blocks_b", blocks_b),
            ("blocks_c", blocks_c),
            ("width_divisor", width_divisor),
        ):
            if value < 1:
                raise UserError(f"model.{name}: must be a positive integer, got {value}")
        ch = _Channels(width_divisor)
        g = ghost_size

        def conv(
            c_in: int,
            c_out: int,
            kernel: int | tuple[int, int],
            stride: int = 1,
            padding: int | tuple[int, int] = 0,
        ) -> _ConvBN:
            return _ConvBN(c_in, c_out, kernel, g, stride, padding)

        # Stem: 299 → 35x35x192 (valid padding except conv 2b).
        c3 = 3
        self.stem = _seq(
            conv(c3, ch(32), 3, stride=2),
            conv(ch(32), ch(32), 3),
            conv(ch(32), ch(64), 3, padding=1),
            nn.MaxPool2d(3, stride=2),
            conv(ch(64), ch(80), 1),
            conv(ch(80), ch(192), 3),
            nn.MaxPool2d(3, stride=2),
        )
        c = ch(192)
        # Mixed_5b (Inception-A of v3): 192 → 320.
        self.mixed_5b = _Branches(
            conv(c, ch(96), 1),
            _seq(conv(c, ch(48), 1), conv(ch(48), ch(64), 5, padding=2)),
            _seq(
                conv(c, ch(64), 1),
                conv(ch(64), ch(96), 3, padding=1),
                conv(ch(96), ch(96), 3, padding=1),
            ),
            _seq(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), conv(c, ch(64), 1)),
        )
        c = ch(96) + ch(64) + ch(96) + ch(64)

        def block_a() -> _Residual:
            branches = _Branches(
                conv(c, ch(32), 1),
                _seq(conv(c, ch(32), 1), conv(ch(32), ch(32), 3, padding=1)),
                _seq(
                    conv(c, ch(32), 1),
                    conv(ch(32), ch(48), 3, padding=1),
                    conv(ch(48), ch(64), 3, padding=1),
                ),
            )
            return _Residual(c, branches, ch(32) + ch(32) + ch(64), scale=0.17)

        self.blocks_a = _seq(*(block_a() for _ in range(blocks_a)))
        # Reduction-A (Mixed_6a): 35x35x320 → 17x17x1088.
        self.reduction_a = _Branches(
            conv(c, ch(384), 3, stride=2),
            _seq(
                conv(c, ch(256), 1),
                conv(ch(256), ch(256), 3, padding=1),
                conv(ch(256), ch(384), 3, stride=2),
            ),
            nn.MaxPool2d(3, stride=2),
        )
        c = ch(384) + ch(384) + c

        def block_b() -> _Residual:
            branches = _Branches(
                conv(c, ch(192), 1),
                _seq(
                    conv(c, ch(128), 1),
                    conv(ch(128), ch(160), (1, 7), padding=(0, 3)),
                    conv(ch(160), ch(192), (7, 1), padding=(3, 0)),
                ),
            )
            return _Residual(c, branches, ch(192) + ch(192), scale=0.10)

        self.blocks_b = _seq(*(block_b() for _ in range(blocks_b)))
        # Reduction-B (Mixed_7a): 17x17x1088 → 8x8x2080.
        self.reduction_b = _Branches(
            _seq(conv(c, ch(256), 1), conv(ch(256), ch(384), 3, stride=2)),
            _seq(conv(c, ch(256), 1), conv(ch(256), ch(288), 3, stride=2)),
            _seq(
                conv(c, ch(256), 1),
                conv(ch(256), ch(288), 3, padding=1),
                conv(ch(288), ch(320), 3, stride=2),
            ),
            nn.MaxPool2d(3, stride=2),
        )
        c = ch(384) + ch(288) + ch(320) + c

        def block_c(relu: bool) -> _Residual:
            branches = _Branches(
                conv(c, ch(192), 1),
                _seq(
                    conv(c, ch(192), 1),
                    conv(ch(192), ch(224), (1, 3), padding=(0, 1)),
                    conv(ch(224), ch(256), (3, 1), padding=(1, 0)),
                ),
            )
            # The reference's final block keeps scale 1.0 and drops the ReLU.
            return _Residual(c, branches, ch(192) + ch(256), scale=0.20 if relu else 1.0, relu=relu)

        self.blocks_c = _seq(*(block_c(relu=i < blocks_c - 1) for i in range(blocks_c)))
        self.head_conv = conv(c, ch(1536), 1)
        self.num_features = ch(1536)
        self.dropout = nn.Dropout(DROPOUT)
        self.fc = nn.Linear(self.num_features, num_classes)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < MIN_INPUT or x.shape[-2] < MIN_INPUT:
            raise ValueError(
                f"Inception-ResNet-V2 needs inputs of at least {MIN_INPUT}x{MIN_INPUT}, "
                f"got {tuple(x.shape[-2:])}"
            )
        x = self.blocks_a(self.mixed_5b(self.stem(x)))
        x = self.blocks_b(self.reduction_a(x))
        x = self.blocks_c(self.reduction_b(x))
        x = self.head_conv(x)
        x = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def _init(model: nn.Module) -> None:
    # Kaiming-normal (fan-out) convs as the harness's other nets; biases (the residual "up"
    # projections and the classifier) start at zero, as TF-slim's biases_initializer does.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
