"""A user's own model for the harness: a small ResNet-style CNN with plain ``nn.BatchNorm2d``.

Nothing here knows the harness. A suite names it as
``factory: "../../examples/custom_model/net.py:build"`` (a path relative to the suite file;
see suites/examples/custom.yaml), and the harness calls ``build(num_classes=10, **kwargs)``,
then turns every ``nn.BatchNorm2d`` into its ghost batch norm (``harness.ghost_bn``).
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (projected when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(y)) + self.skip(x)).relu()


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks):
                layers.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def build(num_classes: int, width: int = 16, blocks: int = 1) -> nn.Module:
    """The factory a suite names: the harness passes num_classes, the suite's kwargs the rest."""
    return TinyResNet(num_classes, width=width, blocks=blocks)
