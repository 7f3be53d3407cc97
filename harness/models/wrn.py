"""Wide ResNet (Zagoruyko & Komodakis 2016), the paper's CIFAR-10 network, with ghost batch norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.core.shapes import wrn_blocks
from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.layers import conv3x3, init_weights


class _PreActBlock(nn.Module):
    """WRN basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut.

    As in the official WRN code, a projection shortcut (1x1 conv) reads the *pre-activated*
    input, while an identity shortcut reads the raw input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, ghost_size: int) -> None:
        super().__init__()
        self.bn1 = GhostBatchNorm2d(c_in, ghost_size)
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn2 = GhostBatchNorm2d(c_out, ghost_size)
        self.conv2 = conv3x3(c_out, c_out)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o1 = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(o1))))
        return y + (x if self.shortcut is None else self.shortcut(o1))


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
        try:
            n = wrn_blocks(depth)
        except ValueError as exc:
            raise UserError(f"model.depth: {depth}: {exc}") from None
        if width < 1:
            raise UserError(f"model.width: must be a positive integer, got {width}")
        widths = (16 * width, 32 * width, 64 * width)
        self.depth = depth
        self.width = width
        self.conv0 = conv3x3(3, 16)
        blocks: list[nn.Module] = []
        c_in = 16
        for c_out, stride in zip(widths, (1, 2, 2), strict=True):
            for i in range(n):
                blocks.append(_PreActBlock(c_in, c_out, stride if i == 0 else 1, ghost_size))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = GhostBatchNorm2d(c_in, ghost_size)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.conv0(x))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
