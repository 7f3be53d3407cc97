"""Ghost batch norm semantics, WRN shape/parameter count, and the model registry."""

from __future__ import annotations

from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.registry import MODELS, build_model, model_names
from harness.models.small_cnn import SmallCNN
from harness.models.wrn import WideResNet

# Small but valid params per registered model; a new registry entry must add its own here.
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "small_cnn": {"width": 4},
    "wrn": {"depth": 10, "width": 1},
    "inception_resnet_v2": {"blocks_a": 1, "blocks_b": 1, "blocks_c": 1, "width_divisor": 16},
    "resnet50": {"width": 4, "max_blocks": 1},
    "gpt": {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 16},
}
# Input side for the loop tests where 32 is too small (Inception-ResNet-V2's valid-padded stem).
SMALL_INPUT: dict[str, int] = {"inception_resnet_v2": 75}


def _slices(n: int, ghost: int) -> list[tuple[int, int]]:
    """The documented slicing: full slices of `ghost`, then one remainder slice if any."""
    g = min(ghost, n)
    full = (n // g) * g
    bounds = [(i, i + g) for i in range(0, full, g)]
    if full < n:
        bounds.append((full, n))
    return bounds


def _make_ghost(c: int, ghost: int, momentum: float | None = 0.1) -> GhostBatchNorm2d:
    bn = GhostBatchNorm2d(c, ghost, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


def _reference(
    bn: GhostBatchNorm2d, x: Tensor, grad_out: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fresh nn.BatchNorm2d per slice: output, input grad, weight grad, bias grad."""
    weight = bn.weight.detach().clone().requires_grad_(True)
    bias = bn.bias.detach().clone().requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    # Training-mode F.batch_norm without running stats is what a fresh nn.BatchNorm2d outputs;
    # the shared weight/bias leaves sum their gradients over slices.
    out = torch.cat(
        [
            F.batch_norm(xr[lo:hi], None, None, weight, bias, True, 0.0, bn.eps)
            for lo, hi in _slices(x.shape[0], bn.ghost_size)
        ]
    )
    out.backward(grad_out)
    assert xr.grad is not None and weight.grad is not None and bias.grad is not None
    return out.detach(), xr.grad, weight.grad, bias.grad


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize(
    ("n", "ghost"),
    [(12, 4), (14, 4), (3, 4), (4, 4), (9, 2)],
    ids=["multiple", "remainder", "n<ghost", "n=ghost", "remainder-of-1"],
)
def test_ghost_bn_matches_batchnorm_per_slice(n: int, ghost: int, channels_last: bool) -> None:
    torch.manual_seed(0)
    c, h, w = 5, 3, 4
    bn = _make_ghost(c, ghost).train()
    x = torch.randn(n, c, h, w, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(n, c, h, w, dtype=torch.float64)
    ref_out, ref_gx, ref_gw, ref_gb = _reference(bn, x, grad_out)

    x.requires_grad_(True)
    out = bn(x)
    out.backward(grad_out)

    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x.grad, ref_gx, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(bn.weight.grad, ref_gw, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(bn.bias.grad, ref_gb, rtol=1e-9, atol=1e-10)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize(("n", "ghost"), [(12, 4), (14, 4), (3, 4)])
def test_ghost_bn_running_stats_are_mean_over_slices(
    n: int, ghost: int, momentum: float | None
) -> None:
    torch.manual_seed(1)
    bn = _make_ghost(3, ghost, momentum=momentum).train()
    assert bn.running_mean is not None and bn.running_var is not None
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()
    x = torch.randn(n, 3, 4, 4, dtype=torch.float64) * 3 - 2
    bn(x)

    slices = [x[lo:hi] for lo, hi in _slices(n, ghost)]
    mean = torch.stack([s.mean((0, 2, 3)) for s in slices]).mean(0)
    var = torch.stack([s.var((0, 2, 3), unbiased=True) for s in slices]).mean(0)
    factor = 1.0 if momentum is None else momentum  # first update of the cumulative average
    torch.testing.assert_close(bn.running_mean, (1 - factor) * old_mean + factor * mean)
    torch.testing.assert_close(bn.running_var, (1 - factor) * old_var + factor * var)
    assert bn.num_batches_tracked is not None and int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ghost_bn_single_slice_is_exactly_batchnorm_including_running_stats(
    dtype: torch.dtype,
) -> None:
    torch.manual_seed(2)
    ghost_bn = GhostBatchNorm2d(4, ghost_size=64).to(dtype).train()
    bn = nn.BatchNorm2d(4).to(dtype).train()
    bn.load_state_dict(ghost_bn.state_dict())
    for _ in range(3):
        x = torch.randn(16, 4, 5, 5, dtype=dtype) * 3 + 1
        torch.testing.assert_close(ghost_bn(x), bn(x))
    torch.testing.assert_close(ghost_bn.state_dict(), bn.state_dict())


def test_ghost_bn_eval_uses_running_stats() -> None:
    torch.manual_seed(3)
    bn = _make_ghost(6, 4).eval()
    assert bn.running_mean is not None and bn.running_var is not None
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(10, 6, 3, 3, dtype=torch.float64)
    expected = F.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
    )
    torch.testing.assert_close(bn(x), expected)
    torch.testing.assert_close(bn.state_dict(), before)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_ghost_bn_under_cpu_autocast_returns_input_dtype(training: bool) -> None:
    torch.manual_seed(4)
    bn = GhostBatchNorm2d(8, ghost_size=4).train(training)
    x = torch.randn(12, 8, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(x)
    assert out.dtype == torch.bfloat16
    bn_ref = GhostBatchNorm2d(8, ghost_size=4).train(training)
    torch.testing.assert_close(out.float(), bn_ref(x.float()), rtol=2e-2, atol=2e-2)
    if training:
        assert bn.running_var is not None
        assert bn.running_var.dtype == torch.float32


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 20),
    ghost=st.integers(1, 8),
    hw=st.tuples(st.integers(1, 3), st.integers(1, 3)),
)
def test_ghost_bn_output_matches_reference_for_any_shape(
    n: int, ghost: int, hw: tuple[int, int]
) -> None:
    h, w = hw
    # nn.BatchNorm2d refuses a slice with a single value per channel; so does the reference.
    if any((hi - lo) * h * w == 1 for lo, hi in _slices(n, ghost)):
        return
    torch.manual_seed(n * 100 + ghost)
    bn = _make_ghost(2, ghost).train()
    x = torch.randn(n, 2, h, w, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    ref_out, ref_gx, _, _ = _reference(bn, x, grad_out)
    x.requires_grad_(True)
    out = bn(x)
    out.backward(grad_out)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(x.grad, ref_gx)


def test_micro_batches_of_whole_ghost_slices_give_the_full_batch_gradient() -> None:
    """What makes gradient accumulation exact (docs/ARCHITECTURE.md, ghost batch norm)."""
    torch.manual_seed(5)
    model = SmallCNN(width=2, ghost_size=4).double()
    x = torch.randn(16, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))

    F.cross_entropy(model(x), y).backward()
    full = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    for chunk in (slice(0, 8), slice(8, 16)):
        (F.cross_entropy(model(x[chunk]), y[chunk]) / 2).backward()
    accumulated = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(full) == len(accumulated) == len(list(model.parameters()))
    for a, b in zip(full, accumulated, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_wrn_16_4_has_the_papers_parameter_count() -> None:
    model = WideResNet(depth=16, width=4)
    assert sum(p.numel() for p in model.parameters()) == 2_748_890
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, GhostBatchNorm2d) and m.ghost_size == 128 for m in bns)


def test_registry_test_params_cover_every_model() -> None:
    assert sorted(SMALL_PARAMS) == model_names() == sorted(MODELS)


def test_one_list_of_model_names() -> None:
    """The torch-free names (core.kinds, read by config) are the registry's, each with one
    config spec whose tag is its name; and every optimizer kind has a builder."""
    from harness.config.schema import MODEL_SPECS
    from harness.core.kinds import MODEL_NAMES, OPTIMIZER_KINDS
    from harness.train.optim import OPTIMIZERS

    assert sorted(MODEL_NAMES) == sorted(MODELS) == sorted(MODEL_SPECS)
    for name, spec in MODEL_SPECS.items():
        assert spec.model_fields["name"].annotation == Literal[name]  # type: ignore[valid-type]
    assert sorted(OPTIMIZERS) == sorted(OPTIMIZER_KINDS)


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_every_registered_model_trains_one_step(name: str, channels_last: bool) -> None:
    torch.manual_seed(6)
    model = build_model(name, SMALL_PARAMS[name], num_classes=10, ghost_size=2)
    if MODELS[name].channels is None:  # a language model: token ids in, logits per position
        _trains_on_tokens(model)
        return
    side = SMALL_INPUT.get(name, 32)
    x = torch.randn(6, 3, side, side)
    if channels_last:
        # torch's stubs omit Module.to's memory_format keyword.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    logits = model(x)
    assert logits.shape == (6, 10)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.randint(0, 10, (6,))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x[:1])).all()


def _trains_on_tokens(model: nn.Module) -> None:
    x = torch.randint(0, 10, (6, 12))
    logits = model(x)
    assert logits.shape == (6, 12, 10) and torch.isfinite(logits).all()
    F.cross_entropy(logits.flatten(0, 1), x.roll(-1, 1).flatten()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # Causal: the logits at position t do not depend on the tokens after t.
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 10
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :6], model(x)[:, :6])


@pytest.mark.parametrize("name", model_names())
def test_same_seed_gives_identical_initial_weights(name: str) -> None:
    def init(seed: int) -> dict[str, Tensor]:
        torch.manual_seed(seed)
        return build_model(name, SMALL_PARAMS[name], num_classes=10, ghost_size=8).state_dict()

    a, b, c = init(0), init(0), init(1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("depth", [4, 9, 12, 15, 17])
def test_bad_wrn_depth_names_the_field_and_valid_values(depth: int) -> None:
    with pytest.raises(UserError, match=r"model\.depth.*10, 16, 22, 28, 40") as info:
        build_model("wrn", {"depth": depth, "width": 1}, num_classes=10, ghost_size=8)
    assert "\n" not in str(info.value)


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(UserError, match=r"model\.name: unknown model 'resnet'; .*small_cnn, wrn"):
        build_model("resnet", {}, num_classes=10, ghost_size=8)


def test_unknown_param_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(UserError, match=r"model\.dropout: .*accepted: depth, width"):
        build_model("wrn", {"depth": 16, "width": 4, "dropout": 0.3}, num_classes=10, ghost_size=8)


def test_missing_required_param_is_named() -> None:
    with pytest.raises(UserError, match=r"model\.width: required"):
        build_model("wrn", {"depth": 16}, num_classes=10, ghost_size=8)


@pytest.mark.parametrize("value", [0, -2, 2.5, "4", True])
def test_invalid_param_value_is_named(value: object) -> None:
    with pytest.raises(UserError, match=r"model\.width: must be a positive integer"):
        build_model("small_cnn", {"width": value}, num_classes=10, ghost_size=8)


def _primitive_ghost_bn(bn: GhostBatchNorm2d, x: Tensor) -> Tensor:
    """The previous implementation's arithmetic (var_mean per slice, then one addcmul), kept
    as a second reference for the one-kernel version: full slices only."""
    n, c, h, w = x.shape
    g = min(bn.ghost_size, n)
    xs = x.view(n // g, g, c, h, w)
    var, mean = torch.var_mean(xs, dim=(1, 3, 4), correction=0, keepdim=True)
    scale = torch.rsqrt(var + bn.eps) * bn.weight.view(1, 1, c, 1, 1)
    shift = bn.bias.view(1, 1, c, 1, 1) - mean * scale
    return torch.addcmul(shift, xs, scale).view(n, c, h, w)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_one_kernel_ghost_bn_matches_the_primitive_op_version(channels_last: bool) -> None:
    torch.manual_seed(7)
    bn = _make_ghost(6, 4).train()
    x = torch.randn(16, 6, 5, 3, dtype=torch.float64) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(16, 6, 5, 3, dtype=torch.float64)
    xr = x.detach().clone().requires_grad_(True)
    ref = _primitive_ghost_bn(bn, xr)
    ref.backward(grad_out)
    ref_gw, ref_gb = bn.weight.grad.clone(), bn.bias.grad.clone()
    bn.zero_grad()
    x.requires_grad_(True)
    out = bn(x)
    out.backward(grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn.weight.grad, ref_gw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bn.bias.grad, ref_gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_ghost_bn_bf16_autocast_several_slices_matches_float32(channels_last: bool) -> None:
    torch.manual_seed(8)
    bn = GhostBatchNorm2d(8, ghost_size=4).train()
    x = torch.randn(16, 8, 4, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xb = x.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bn(xb)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    ref = GhostBatchNorm2d(8, ghost_size=4).train()(xb.float())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_accumulated_running_stats_do_not_depend_on_micro_batching(
    momentum: float | None,
) -> None:
    """Inside accumulate_running_stats, one update per block from all its slices' moments."""
    from harness.models.ghost_bn import accumulate_running_stats

    torch.manual_seed(9)
    x = torch.randn(24, 3, 4, 4, dtype=torch.float64) * 3 - 2
    states = []
    for chunks in (1, 3, 6):
        bn = _make_ghost(3, 4, momentum=momentum).train()
        bn.load_state_dict(_make_ghost_state(momentum))
        with accumulate_running_stats(bn):
            for part in x.chunk(chunks):
                bn(part)
        states.append(bn.state_dict())
    for other in states[1:]:
        torch.testing.assert_close(other, states[0], rtol=1e-12, atol=1e-12)
    assert int(states[0]["num_batches_tracked"]) == 1
    # And it is the per-forward update of the whole batch.
    bn = _make_ghost(3, 4, momentum=momentum).train()
    bn.load_state_dict(_make_ghost_state(momentum))
    bn(x)
    torch.testing.assert_close(bn.state_dict(), states[0], rtol=1e-12, atol=1e-12)


def _make_ghost_state(momentum: float | None) -> dict[str, Tensor]:
    torch.manual_seed(10)
    return _make_ghost(3, 4, momentum=momentum).state_dict()


def test_a_failed_block_leaves_running_stats_alone() -> None:
    from harness.models.ghost_bn import accumulate_running_stats

    bn = _make_ghost(3, 4).train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with pytest.raises(KeyError), accumulate_running_stats(bn):
        bn(torch.randn(8, 3, 2, 2, dtype=torch.float64))
        raise KeyError
    torch.testing.assert_close(bn.state_dict(), before)
    bn(torch.randn(8, 3, 2, 2, dtype=torch.float64))  # nothing pending leaks into the next one
    assert int(bn.num_batches_tracked) == 1
