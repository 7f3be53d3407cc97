"""ResNet-50 (He et al. 2016) with ghost batch norm, for the ImageNet suites.

Layer for layer torchvision's ``resnet50`` ("v1.5": the stride-2 of a downsampling bottleneck
sits on its 3x3 conv, not its first 1x1), so the parameter count (25,557,032 with 1000 classes)
and a state dict's shapes match torchvision's. Every batch norm is a ``GhostBatchNorm2d`` with
torchvision's eps 1e-5 and momentum 0.1.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.layers import conv3x3, init_weights

# Blocks per stage of ResNet-50; `max_blocks` caps them for tiny test configurations.
RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


class _Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 (stride) - 1x1 (expand ×4), each followed by GBN; ReLU after the sum."""

    def __init__(self, c_in: int, planes: int, stride: int, ghost_size: int) -> None:
        super().__init__()
        c_out = planes * EXPANSION
        self.conv1 = nn.Conv2d(c_in, planes, kernel_size=1, bias=False)
        self.bn1 = GhostBatchNorm2d(planes, ghost_size)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = GhostBatchNorm2d(planes, ghost_size)
        self.conv3 = nn.Conv2d(planes, c_out, kernel_size=1, bias=False)
        self.bn3 = GhostBatchNorm2d(c_out, ghost_size)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                GhostBatchNorm2d(c_out, ghost_size),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 v1.5 with ghost batch norm; ``width`` and ``max_blocks`` shrink it for tests.

    Stem conv7x7/2 (``width`` channels) - GBN - ReLU - maxpool3x3/2, four stages of bottlenecks
    with ``width``·(1, 2, 4, 8) inner channels (×4 out) and strides 1, 2, 2, 2, global average
    pool, linear. ``width`` 64 and no ``max_blocks`` is ResNet-50 (blocks 3, 4, 6, 3);
    ``max_blocks`` k caps every stage at k blocks (k = 1: a 14-layer net). Convolutions get
    Kaiming-normal (fan-out) init and batch norms weight 1, bias 0, as in torchvision;
    ``zero_init_residual``: the last batch norm of each bottleneck starts at weight 0, so each
    residual block starts as the identity (Goyal et al. 2017, Sec 5.1; torchvision's flag).
    Any input of at least 32x32 works (224x224 is the usual resolution).
    """

    input_size: ClassVar[int] = 224  # the side the data path should crop to

    def __init__(
        self,
        width: int = 64,
        max_blocks: int | None = None,
        num_classes: int = 1000,
        ghost_size: int = 32,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if width < 1:
            raise UserError(f"model.width: must be a positive integer, got {width}")
        if max_blocks is not None and max_blocks < 1:
            raise UserError(f"model.max_blocks: must be a positive integer, got {max_blocks}")
        blocks = tuple(n if max_blocks is None else min(n, max_blocks) for n in RESNET50_BLOCKS)
        self.blocks_per_stage = blocks
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = GhostBatchNorm2d(width, ghost_size)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stage: list[nn.Module] = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(_Bottleneck(c_in, planes, stride, ghost_size))
                c_in = planes * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)
        if zero_init_residual:
            for block in self.modules():
                if isinstance(block, _Bottleneck):
                    nn.init.zeros_(block.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
