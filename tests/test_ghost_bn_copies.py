"""Ghost batch norm without layout copies (issue 46, item 2): on the CPU the per-slice kernels
give, bit for bit, what the one-kernel version with its transposes gave.

The one-kernel version (`GhostBatchNorm2d._one_kernel`, the code before the change, kept for
the cases `_per_slice_is_exact` refuses) is the reference: forcing it is forcing "before".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import harness.models.ghost_bn as ghost_bn
from harness.app.fingerprint import run_fingerprint
from harness.models.ghost_bn import GhostBatchNorm2d, accumulate_running_stats
from harness.models.small_cnn import SmallCNN
from tests.conftest import REPO


def _force_one_kernel(m: pytest.MonkeyPatch) -> None:
    m.setattr(ghost_bn, "_per_slice_is_exact", lambda x, ghost: False)


def _layer_run(
    x: Tensor, grad_out: Tensor, ghost: int, old: bool, mp: pytest.MonkeyPatch
) -> list[Tensor]:
    with mp.context() as m:
        if old:
            _force_one_kernel(m)
        torch.manual_seed(3)
        bn = GhostBatchNorm2d(x.shape[1], ghost).to(x.dtype).train()
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        xr = x.detach().clone().requires_grad_(True)
        out = bn(xr)
        out.backward(grad_out)
        assert xr.grad is not None and bn.weight.grad is not None and bn.bias.grad is not None
        assert bn.running_mean is not None and bn.running_var is not None
        layout = torch.channels_last if x.dim() == 4 and _cl(x) else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)
        return [out, xr.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]


def _cl(x: Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    ("n", "ghost", "c", "hw"),
    [(128, 32, 16, 16), (512, 128, 64, 4), (72, 16, 32, 8), (33, 8, 16, 4), (8, 8, 16, 4)],
    ids=["4-slices", "B512-ghost128", "remainder", "remainder-of-1", "one-slice"],
)
def test_per_slice_kernels_equal_the_transposed_kernel_bit_for_bit(
    n: int, ghost: int, c: int, hw: int, channels_last: bool, dtype: torch.dtype
) -> None:
    mp = pytest.MonkeyPatch()
    torch.manual_seed(n + c)
    x = (torch.randn(n, c, hw, hw) * 2 + 1).to(dtype)
    grad_out = torch.randn(n, c, hw, hw).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    assert ghost_bn._per_slice_is_exact(x, ghost) == (not channels_last or n % ghost == 0)
    new = _layer_run(x, grad_out, ghost, False, mp)
    old = _layer_run(x, grad_out, ghost, True, mp)
    names = ["output", "input grad", "weight grad", "bias grad", "running mean", "running var"]
    for name, a, b in zip(names, new, old, strict=True):
        assert torch.equal(a, b), name


def _train(channels_last: bool, old: bool) -> list[Tensor]:
    """Four float32 steps of B = 64 as two micro-batches of two ghost slices of 16."""
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        if old:
            _force_one_kernel(m)
        torch.manual_seed(0)
        model = SmallCNN(width=16, ghost_size=16).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        data = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.randn(64, 3, 16, 16, generator=data)
            y = torch.randint(0, 10, (64,), generator=data)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            with accumulate_running_stats(model):
                for part in (slice(0, 32), slice(32, 64)):
                    loss = F.cross_entropy(model(x[part]), y[part], reduction="sum") / 64
                    loss.backward()
            opt.step()
        return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_float32_training_is_bit_identical_to_the_transposed_kernel(channels_last: bool) -> None:
    new, old = _train(channels_last, old=False), _train(channels_last, old=True)
    assert len(new) == len(old)
    assert all(torch.equal(a, b) for a, b in zip(new, old, strict=True))


def test_the_float64_fingerprint_series_are_identical_not_just_within_tolerance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The committed fingerprint allows 1e-9 relative; here every series must be equal."""
    suite = REPO / "suites" / "fingerprint.yaml"
    new = run_fingerprint("synthetic", suite=suite)
    _force_one_kernel(monkeypatch)
    old = run_fingerprint("synthetic", suite=suite)
    assert new["steps"] == old["steps"]
    assert new["test_loss"] == old["test_loss"]
    assert new["epochs"] == old["epochs"]


def test_the_cases_that_would_move_bits_keep_the_one_kernel_path() -> None:
    """Measured while writing this: these cases move bits per slice (`_per_slice_is_exact`)."""
    cl = torch.channels_last
    assert not ghost_bn._per_slice_is_exact(torch.zeros(72, 32, 4, 4).to(memory_format=cl), 16)
    assert not ghost_bn._per_slice_is_exact(torch.zeros(32, 4, 4, 4).to(memory_format=cl), 8)
    assert ghost_bn._per_slice_is_exact(torch.zeros(32, 8, 4, 4, dtype=torch.float64), 8)
    assert ghost_bn._per_slice_is_exact(torch.zeros(72, 5, 4, 4), 16)
    assert ghost_bn._per_slice_is_exact(torch.zeros(64, 16, 4, 4).to(memory_format=cl), 16)
    assert ghost_bn._per_slice_is_exact(torch.zeros(8, 4, 4, 4).to(memory_format=cl), 16)
