"""Per-step float64 numerics of one training run, for the numeric fingerprint (tier 1 of the
gate, harness.app.fingerprint): hooks on the job's model and optimizer, fed the batches'
labels by the audited source (harness.train.audit.AuditedData)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from harness.train.losses import summed_loss


class StepProbe:
    """Per-step float64 numerics of one training run, for the fingerprint; read with `result`.

    Per optimizer step: the mean training loss (recomputed in float64 from the logits the model
    returned and the labels it was fed), the L2 norm of all parameters after the step and the
    L2 norm of the step's change. Per evaluation: the mean float64 test cross-entropy. Which
    batch a forward call belongs to comes from the data (train draw or test batch), not from
    the model's train/eval flag, so a model left in train mode at evaluation still counts as
    an evaluation.
    """

    def __init__(self) -> None:
        self.losses: list[Tensor] = []
        self.param_norms: list[Tensor] = []
        self.update_norms: list[Tensor] = []
        self.test_losses: list[Tensor] = []
        self._source = "none"
        self._labels: Tensor | None = None
        self._offset = 0
        self._total = 1
        self._loss: Tensor | None = None
        self._test_sum: Tensor | None = None
        self._test_n = 0
        self._before: list[Tensor] = []
        self._handles: list[Any] = []

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._handles = [
            model.register_forward_hook(self._forward),
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def train_batch(self, labels: Tensor) -> None:
        self._source, self._labels, self._offset, self._total = "train", labels, 0, len(labels)
        self._loss = None

    def test_batch(self, labels: Tensor) -> None:
        if self._source != "test":
            self._test_sum, self._test_n = None, 0
        self._source, self._labels, self._offset = "test", labels, 0

    def end_test(self) -> None:
        if self._test_sum is not None:
            self.test_losses.append(self._test_sum / self._test_n)
        self._source, self._test_sum = "none", None

    def _forward(self, _module: nn.Module, _inputs: Any, output: Tensor) -> None:
        if self._labels is None or self._source == "none":
            return
        n = output.shape[0]
        y = self._labels[self._offset : self._offset + n]
        self._offset += n
        loss = summed_loss(output.detach().double(), y)  # per example: per image or sequence
        if self._source == "train":
            part = loss / self._total
            self._loss = part if self._loss is None else self._loss + part
        else:
            self._test_sum = loss if self._test_sum is None else self._test_sum + loss
            self._test_n += n

    def _params(self, optimizer: torch.optim.Optimizer) -> list[Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def _pre_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        self._before = [p.detach().double().clone() for p in self._params(optimizer)]

    def _post_step(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        params = [p.detach().double() for p in self._params(optimizer)]
        deltas = [p - b for p, b in zip(params, self._before, strict=True)]
        self.param_norms.append(torch.stack([(p * p).sum() for p in params]).sum().sqrt())
        self.update_norms.append(torch.stack([(d * d).sum() for d in deltas]).sum().sqrt())
        nan = torch.tensor(math.nan, dtype=torch.float64)
        self.losses.append(self._loss if self._loss is not None else nan)
        self._loss = None

    def result(self) -> dict[str, list[float]]:
        """Every recorded value as Python floats (the one host read of the probe)."""

        def floats(values: list[Tensor]) -> list[float]:
            return [float(v) for v in torch.stack(values).cpu()] if values else []

        return {
            "loss": floats(self.losses),
            "param_norm": floats(self.param_norms),
            "update_norm": floats(self.update_norms),
            "test_loss": floats(self.test_losses),
        }
