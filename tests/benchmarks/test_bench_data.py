"""Speed of one augmented training batch (crop + flip + normalize) on CPU.

Run with ``pytest tests/benchmarks --benchmark-only``; ``--benchmark-disable`` runs each body
once as a smoke test.
"""

from __future__ import annotations

import pytest
import torch

from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData, random_crop_flip

BATCH = 512


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(10000, 10, seed=0), torch.device("cpu"))


@pytest.fixture
def indices(data: DeviceData) -> torch.Tensor:
    return torch.randperm(data.n_train, generator=torch.Generator().manual_seed(0))[:BATCH]


def test_bench_train_batch(benchmark, data: DeviceData, indices: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = benchmark.pedantic(
        data.train_batch, args=(indices, gen), rounds=30, iterations=1, warmup_rounds=3
    )
    assert x.shape == (BATCH, 3, 32, 32) and y.shape == (BATCH,)


def test_bench_random_crop_flip(benchmark, data: DeviceData, indices: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    out = benchmark.pedantic(
        random_crop_flip,
        args=(data.train_padded, indices, gen),
        rounds=30,
        iterations=1,
        warmup_rounds=3,
    )
    assert out.shape == (BATCH, 3, 32, 32) and out.dtype == torch.uint8
