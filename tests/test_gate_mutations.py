"""Mutation tests of the regression gate: each one-line recipe bug must make it fail.

Each test injects one bug into the real code, in-process (monkeypatch, undone after the test),
runs the tier-1 fingerprint cell on synthetic data (tier 0's applied values and checksums come
with it) and asserts that the comparison with the committed results/fingerprint/synthetic.json
fails, naming the tier and the column or series that caught it. The unmutated run must pass,
so a failure here is the bug, not noise. About 3 s per run on one CPU thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import harness.data.device as device_module
import harness.train.epoch as epoch_module
import harness.train.loop as loop
import harness.train.optim as optim
from harness.app.fingerprint import (
    compare_fingerprint,
    default_file,
    read_fingerprint,
    run_fingerprint,
)
from harness.data.cifar10 import PAD
from harness.data.device import DeviceData
from harness.models.ghost_bn import GhostBatchNorm2d
from tests.conftest import REPO


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return read_fingerprint(REPO / default_file("synthetic"))


def _run(expected: dict[str, Any]) -> tuple[str, ...]:
    actual = run_fingerprint("synthetic", suite=REPO / "suites" / "fingerprint.yaml")
    return compare_fingerprint(expected, actual).failures


def test_the_unmutated_recipe_matches_its_fingerprint(expected: dict[str, Any]) -> None:
    assert _run(expected) == ()


def test_the_real_data_fingerprint_matches(cifar_root: Path) -> None:
    doc = read_fingerprint(REPO / default_file("cifar10"))
    actual = run_fingerprint("cifar10", suite=REPO / "suites" / "fingerprint.yaml")
    assert compare_fingerprint(doc, actual).failures == ()


# --- the bugs: each a function of monkeypatch that injects one ---------------------------------


def weight_decay_dropped(mp: pytest.MonkeyPatch) -> None:
    real = optim.OPTIMIZERS["momentum"]
    mp.setitem(
        optim.OPTIMIZERS,
        "momentum",
        lambda params, spec, extra: real(
            params, dataclasses.replace(spec, weight_decay=0.0), extra
        ),
    )


def ghost_bn_off(mp: pytest.MonkeyPatch) -> None:
    # Statistics over the whole micro-batch, the module still saying ghost_size=16.
    mp.setattr(GhostBatchNorm2d, "forward", lambda self, x: nn.BatchNorm2d.forward(self, x))


def same_order_every_epoch(mp: pytest.MonkeyPatch) -> None:
    real = epoch_module.stream_seed
    mp.setattr(
        epoch_module,
        "stream_seed",
        lambda seed, *s: real(seed, "order", 0) if s and s[0] == "order" else real(seed, *s),
    )


def eval_in_train_mode(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(nn.Module, "eval", lambda self: self)


def constant_lr(mp: pytest.MonkeyPatch) -> None:
    real = loop.set_hyperparameters
    mp.setattr(
        loop,
        "set_hyperparameters",
        lambda opt, lr, momentum: real(opt, opt.param_groups[0]["lr"], momentum),
    )


def momentum_zero(mp: pytest.MonkeyPatch) -> None:
    real = loop.set_hyperparameters
    mp.setattr(loop, "set_hyperparameters", lambda opt, lr, momentum: real(opt, lr, 0.0))


def batch_schedule_ignored(mp: pytest.MonkeyPatch) -> None:
    real = loop.train_epoch

    def first_batch(model, optimizer, data, job, epoch, phase, execution, replica=None, **kw):  # type: ignore[no-untyped-def]
        first = dataclasses.replace(phase, batch_size=job.plan.phases[0].batch_size)
        return real(model, optimizer, data, job, epoch, first, execution, replica, **kw)

    mp.setattr(loop, "train_epoch", first_batch)


def augmentation_off(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(
        device_module,
        "random_crop_flip",
        lambda padded, indices, generator, crop=32: padded[indices, :, PAD:-PAD, PAD:-PAD],
    )


def labels_shifted_on_ten_percent(mp: pytest.MonkeyPatch) -> None:
    real = DeviceData.train_images

    def shifted(self, indices, generator):  # type: ignore[no-untyped-def]
        x, y = real(self, indices, generator)
        hit = indices % 10 == 0
        return x, torch.where(hit, (y + 1) % 10, y)

    mp.setattr(DeviceData, "train_images", shifted)


# bug -> the start of a failure line the gate must print for it
MUTATIONS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "weight decay dropped": (weight_decay_dropped, "tier 0: applied_weight_decay at epoch 1"),
    "ghost BN off": (ghost_bn_off, "tier 1: loss at step 1"),
    "same data order every epoch": (same_order_every_epoch, "tier 0: order_checksum at epoch 2"),
    "evaluation in train mode": (eval_in_train_mode, "tier 1: test_loss at evaluation 1"),
    "constant lr": (constant_lr, "tier 0: applied_lr vs plan at epoch 3"),
    "momentum 0": (momentum_zero, "tier 0: applied_momentum vs plan at epoch 1"),
    "batch schedule ignored": (batch_schedule_ignored, "tier 0: applied_batch_size vs plan"),
    "augmentation off": (augmentation_off, "tier 0: augment_checksum at epoch 1"),
    "labels shifted on 10%": (labels_shifted_on_ten_percent, "tier 0: label_checksum at epoch 1"),
}


@pytest.mark.parametrize("bug", list(MUTATIONS))
def test_each_one_line_bug_fails_the_gate(
    bug: str, expected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    inject, caught_by = MUTATIONS[bug]
    inject(monkeypatch)
    failures = _run(expected)
    assert failures, f"{bug}: the gate passed"
    assert any(line.startswith(caught_by) for line in failures), "\n".join(failures)
    print(f"\n{bug}: {len(failures)} failure lines; first: {failures[0]}")
