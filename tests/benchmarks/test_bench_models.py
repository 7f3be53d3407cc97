"""Speed of ghost batch norm and of one CPU training step per model.

Run with ``--benchmark-only`` for numbers (images/s land in ``extra_info``; about two minutes
on two CPU cores, mostly WRN-16-4 at batch 512). With ``--benchmark-disable`` each fast case
runs once as a smoke test and the WRN cases are skipped. Threads are left at torch's
default so the numbers describe the machine as a training run would use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.registry import build_model

PEDANTIC: dict[str, Any] = {"rounds": 3, "warmup_rounds": 1, "iterations": 1}


def _record_images_per_s(benchmark: Any, images: int) -> None:
    # benchmark.stats is None when run with --benchmark-disable.
    stats = getattr(benchmark, "stats", None)
    # The median, because a shared CPU produces slow outliers rather than fast ones.
    if stats is not None and stats.stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(images / stats.stats.median, 1)
    benchmark.extra_info["images_per_call"] = images


def test_bench_ghost_bn_forward_backward(benchmark: Any) -> None:
    torch.manual_seed(0)
    bn = GhostBatchNorm2d(64, ghost_size=128).train()
    x = torch.randn(512, 64, 16, 16, requires_grad=True)
    grad_out = torch.randn_like(x)

    def step() -> None:
        bn(x).backward(grad_out)

    benchmark.pedantic(step, **PEDANTIC)
    _record_images_per_s(benchmark, x.shape[0])


def _train_step(model: nn.Module, batch: int) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


@pytest.mark.parametrize(
    ("name", "params", "batch"),
    [
        ("small_cnn", {"width": 16}, 128),
        ("wrn", {"depth": 16, "width": 4}, 128),
        ("wrn", {"depth": 16, "width": 4}, 512),
    ],
    ids=["small_cnn-b128", "wrn16_4-b128", "wrn16_4-b512"],
)
def test_bench_train_step(benchmark: Any, name: str, params: dict[str, int], batch: int) -> None:
    if benchmark.disabled and name == "wrn":
        # One WRN-16-4 step takes seconds to tens of seconds on two cores; the smoke run
        # covers this code through small_cnn, and tests/test_models.py covers WRN itself.
        pytest.skip("WRN steps only run with benchmarks enabled")
    torch.manual_seed(0)
    model = build_model(name, params, num_classes=10, ghost_size=128).train()
    benchmark.extra_info["threads"] = torch.get_num_threads()
    # One WRN-16-4 step at batch 512 is ~30 s on two cores; a single timed round keeps the
    # file near two minutes.
    pedantic = {**PEDANTIC, "rounds": 1} if batch >= 512 else PEDANTIC
    benchmark.pedantic(_train_step(model, batch), **pedantic)
    _record_images_per_s(benchmark, batch)
