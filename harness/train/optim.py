"""Optimizers: a registry of builders, and the per-phase change of lr and momentum.

The optimizer is built once per cell; each phase only rewrites `lr` (and `momentum`) in its
param groups, so momentum buffers and Adam moments carry across phases as the paper's
schedules assume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from harness.train.spec import OptimizerConfig

Builder = Callable[
    [Iterable[torch.nn.Parameter], OptimizerConfig, dict[str, Any]], torch.optim.Optimizer
]


def _sgd(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, extra: dict[str, Any]
) -> torch.optim.Optimizer:
    # PyTorch's SGD keeps v <- m v + g and steps by lr v: the paper's accumulation A (eq. 6-7),
    # so a change of lr between phases does not rescale what is already accumulated.
    return torch.optim.SGD(
        params,
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.kind == "nesterov",
        weight_decay=spec.weight_decay,
        **extra,
    )


def _adam(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, extra: dict[str, Any]
) -> torch.optim.Optimizer:
    # weight_decay here is an L2 term on the loss, as TensorFlow's Adam with L2 regularization.
    return torch.optim.Adam(
        params,
        lr=spec.lr,
        betas=spec.betas,
        eps=spec.eps,
        weight_decay=spec.weight_decay,
        **extra,
    )


OPTIMIZERS: dict[str, Builder] = {
    "sgd": _sgd,
    "momentum": _sgd,
    "nesterov": _sgd,
    "adam": _adam,
}


def build_optimizer(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer for a cell; multi-tensor (foreach) kernels on accelerators."""
    extra = {"foreach": True} if device.type != "cpu" else {}
    return OPTIMIZERS[spec.kind](params, spec, extra)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """Enter a phase: new lr (and momentum for SGD with momentum), state kept."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "momentum" in group and group["momentum"] > 0:
            group["momentum"] = momentum
