"""A small conv net with ghost batch norm, fast enough for CPU suites and CI."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.layers import conv3x3, init_weights


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
                conv3x3(c_in, c_out),
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
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
