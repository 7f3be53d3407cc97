"""Optimizers: a registry of builders, and the per-phase change of lr and momentum.

The optimizer is built once per cell; each phase only rewrites `lr` (and `momentum`) in its
param groups, so momentum buffers and Adam moments carry across phases as the paper's
schedules assume.

Speed: where torch has a fused kernel for the device (CUDA, and the CPU since torch 2.4) the
optimizer is built with ``fused=True`` and ``lr`` is a 0-d float32 tensor on the device that a
phase change overwrites in place. The fused kernels read it on the device, so neither a step
nor a schedule change syncs with the host, and a compiled step sees the same tensor whatever
the phase (no recompile). Elsewhere the multi-tensor (foreach) kernels get a float lr: a tensor
lr there becomes an ``alpha=`` scalar, which is one hidden host sync per step. Momentum stays a
float: SGD tests ``momentum != 0`` in Python, which a tensor would turn into a sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from harness.core.kinds import OptimizerKind
from harness.train.spec import OptimizerConfig

Builder = Callable[
    [Iterable[torch.nn.Parameter], OptimizerConfig, dict[str, Any]], torch.optim.Optimizer
]


def _sgd(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, extra: dict[str, Any]
) -> torch.optim.Optimizer:
    # PyTorch's SGD keeps v <- m v + g and steps by lr v: the paper's accumulation A (eq. 6-7),
    # so a change of lr between phases does not rescale what is already accumulated.
    extra = {"lr": spec.lr, **extra}
    return torch.optim.SGD(
        params,
        momentum=spec.momentum,
        nesterov=spec.kind == "nesterov",
        weight_decay=spec.weight_decay,
        **extra,
    )


def _adam(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, extra: dict[str, Any]
) -> torch.optim.Optimizer:
    # "adam": weight_decay is an L2 term on the loss, as TensorFlow's Adam with L2
    # regularization (the paper's reading). "adamw": decoupled decay, each step shrinks p by
    # lr · weight_decay · p outside the moments (not the paper's; docs/paper.md).
    optimizer = torch.optim.AdamW if spec.kind == "adamw" else torch.optim.Adam
    extra = {"lr": spec.lr, **extra}
    return optimizer(
        params, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay, **extra
    )


OPTIMIZERS: dict[OptimizerKind, Builder] = {  # one entry per core.kinds.OPTIMIZER_KINDS
    "sgd": _sgd,
    "momentum": _sgd,
    "nesterov": _sgd,
    "adam": _adam,
    "adamw": _adam,
}


def _fused_devices() -> tuple[str, ...]:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch too old for fused optimizers on any device but CUDA
        return ("cuda",)
    return tuple(_get_fused_kernels_supported_devices())


def build_optimizer(
    params: Iterable[torch.nn.Parameter], spec: OptimizerConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer for a cell: fused with a device-tensor lr where torch offers it."""
    params = list(params)
    if device.type in _fused_devices():
        lr = torch.tensor(spec.lr, dtype=torch.float32, device=device)
        try:
            return OPTIMIZERS[spec.kind](params, spec, {"fused": True, "lr": lr})
        except (RuntimeError, TypeError, ValueError):
            pass  # this torch has no fused kernel for these parameters: foreach below
    extra: dict[str, Any] = {"foreach": True} if device.type != "cpu" else {}
    return OPTIMIZERS[spec.kind](params, spec, extra)


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    """Enter a phase: new lr (and momentum for SGD with momentum), state kept.

    A tensor lr is overwritten in place (a device-side fill, no sync), so whatever holds it
    sees the new value.
    """
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
        if "momentum" in group and group["momentum"] > 0:
            group["momentum"] = momentum
