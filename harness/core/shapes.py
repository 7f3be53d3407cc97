"""Architecture rules that the suite layer checks and the model layer builds from.

One function per rule, so a suite is refused for exactly the inputs the model would refuse,
with the same words, and `harness plan` can check them without importing torch.
"""

from __future__ import annotations


def wrn_blocks(depth: int) -> int:
    """Residual blocks per group of a wide ResNet of `depth` layers: depth = 6n + 4.

    Three groups of n blocks of two 3x3 convolutions make the 6n; Zagoruyko & Komodakis count
    4 more layers. `ValueError` for any other depth.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError("WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40 ...)")
    return (depth - 4) // 6
