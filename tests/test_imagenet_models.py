"""The ImageNet models: published parameter counts, ghost batch norm everywhere, a real step.

Full-size networks run one forward/backward at a small resolution on the CPU (seconds); tiny
configurations of each train a few steps to show the loss goes down.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError
from harness.models.ghost_bn import GhostBatchNorm2d
from harness.models.inception_resnet import InceptionResNetV2
from harness.models.registry import build_model
from harness.models.resnet import ResNet50


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_resnet50_has_torchvisions_parameter_count_and_ghost_bn_everywhere() -> None:
    model = build_model("resnet50", {}, num_classes=1000, ghost_size=32)
    # torchvision.models.resnet50(): 25,557,032 parameters.
    assert _count(model) == 25_557_032
    bns = _batch_norms(model)
    assert len(bns) == 53
    assert all(
        isinstance(m, GhostBatchNorm2d) and m.ghost_size == 32 and m.eps == 1e-5 for m in bns
    )


def test_inception_resnet_v2_has_timms_parameter_count_and_ghost_bn_everywhere() -> None:
    model = build_model("inception_resnet_v2", {}, num_classes=1000, ghost_size=64)
    # timm.create_model("inception_resnet_v2"): 55,843,464 parameters (TF-slim's network).
    assert _count(model) == 55_843_464
    bns = _batch_norms(model)
    assert all(
        isinstance(m, GhostBatchNorm2d) and m.ghost_size == 64 and m.eps == 1e-3 for m in bns
    )
    assert isinstance(model, InceptionResNetV2)
    assert (len(model.blocks_a), len(model.blocks_b), len(model.blocks_c)) == (10, 20, 10)
    assert model.dropout.p == pytest.approx(0.2)


def test_inception_resnet_v2_figure9_depths_are_a_param_choice() -> None:
    model = build_model(
        "inception_resnet_v2",
        {"blocks_a": 5, "blocks_b": 10, "blocks_c": 5},
        num_classes=1000,
        ghost_size=32,
    )
    assert isinstance(model, InceptionResNetV2)
    assert (len(model.blocks_a), len(model.blocks_b), len(model.blocks_c)) == (5, 10, 5)
    # Only the last C block drops its ReLU (and keeps scale 1), as in the reference.
    assert [b.relu is None for b in model.blocks_c] == [False] * 4 + [True]
    assert [b.scale for b in model.blocks_c] == [0.2] * 4 + [1.0]


@pytest.mark.parametrize(
    ("name", "side"), [("inception_resnet_v2", 75), ("resnet50", 64)], ids=["irv2", "resnet50"]
)
def test_full_size_model_trains_one_step_at_small_resolution(name: str, side: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, {}, num_classes=1000, ghost_size=2)
    model.train()
    x = torch.randn(4, 3, side, side)
    logits = model(x)
    assert logits.shape == (4, 1000)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 999])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    bn = _batch_norms(model)[0]
    assert bn.num_batches_tracked is not None and int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize(
    ("name", "params", "side"),
    [
        (
            "inception_resnet_v2",
            {"blocks_a": 1, "blocks_b": 1, "blocks_c": 2, "width_divisor": 8},
            75,
        ),
        ("resnet50", {"width": 8, "max_blocks": 1}, 32),
    ],
    ids=["irv2", "resnet50"],
)
def test_tiny_configuration_learns_a_fixed_batch(
    name: str, params: dict[str, int], side: int
) -> None:
    torch.manual_seed(1)
    model = build_model(name, params, num_classes=4, ghost_size=4)
    if isinstance(model, InceptionResNetV2):
        model.dropout.p = 0.0  # the check is about optimization, not regularization
    x = torch.randn(8, 3, side, side)
    y = torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Deterministic (seeded); the tiny IRv2 bounces on the way down, so judge the end.
    assert min(losses[-3:]) < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_inception_resnet_v2_too_small_input_is_a_clear_error() -> None:
    model = InceptionResNetV2(1, 1, 1, width_divisor=16, num_classes=3, ghost_size=2)
    with pytest.raises(ValueError, match="at least 75x75"):
        model(torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize(
    ("name", "param"),
    [("resnet50", "max_blocks"), ("inception_resnet_v2", "blocks_b")],
)
def test_nonpositive_knob_is_named(name: str, param: str) -> None:
    with pytest.raises(UserError, match=rf"model\.{param}: must be a positive integer"):
        build_model(name, {param: 0}, num_classes=10, ghost_size=8)


def test_resnet50_is_v1_5_stride_on_the_3x3() -> None:
    model = ResNet50(num_classes=10, ghost_size=2)
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)


def test_resnet50_zero_init_residual_starts_each_block_as_the_identity() -> None:
    """Goyal et al.'s init: each bottleneck's last batch norm at weight 0 (a flag, true or
    false, never a number)."""
    from harness.errors import UserError

    params = {"width": 4, "max_blocks": 1, "zero_init_residual": True}
    model = build_model("resnet50", params, num_classes=10, ghost_size=4)
    blocks = [m for m in model.modules() if type(m).__name__ == "_Bottleneck"]
    assert len(blocks) == 4 and all(float(b.bn3.weight.abs().sum()) == 0 for b in blocks)
    assert all(float(b.bn1.weight.min()) == 1 for b in blocks)  # only the last one
    plain = build_model("resnet50", {"width": 4, "max_blocks": 1}, num_classes=10, ghost_size=4)
    assert all(float(b.bn3.weight.min()) == 1 for b in plain.modules() if hasattr(b, "bn3"))
    with pytest.raises(UserError, match=r"model\.zero_init_residual: must be true or false"):
        build_model("resnet50", {"zero_init_residual": 1}, num_classes=10, ghost_size=4)
