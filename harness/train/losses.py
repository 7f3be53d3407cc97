"""The loss and accuracy of a batch, for a classifier and a language model alike.

An example is an image with one label (logits (B, C), targets (B,)) or a sequence of T tokens
with a target per position (logits (B, T, V), targets (B, T)). An example's loss is the mean
cross-entropy over its targets (one for an image, T for a sequence), so the sum over examples
divided by B is the mean over every token of the batch (every sequence has T), and everything
that counts examples (the step's 1 / B, the noise meter's b and B, the probe, N in the plan)
counts sequences. An example's accuracy is the fraction of its targets predicted (next-token
accuracy for a sequence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def summed_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The sum over the batch's examples of each one's mean cross-entropy."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets, reduction="sum")
    per_example = targets[0].numel()
    flat = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="sum")
    return flat / per_example


def summed_correct(logits: Tensor, targets: Tensor) -> Tensor:
    """The sum over the batch's examples of each one's fraction of targets predicted, float64
    (a whole count for a classifier)."""
    hits = (logits.argmax(dim=-1) == targets).sum(dtype=torch.float64)
    return hits if targets.ndim == 1 else hits / targets[0].numel()
