"""The public API as a user calls it: `import harness`, torch-free algebra, per-step lookups."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import harness
from tests.conftest import REPO

N = 50_000


def _cifar(realization: str = "batch", **kw) -> harness.Plan:
    base = harness.BaseSchedule(epochs=200, milestones=(60, 120, 160), factor=5)
    return harness.realize(
        base, lr=0.1, batch_size=128, momentum=0.9, train_size=N, realization=realization, **kw
    )


def test_import_harness_and_the_algebra_do_not_import_torch():
    code = (
        "import sys, harness\n"
        "b = harness.BaseSchedule(epochs=3, milestones=(1,), factor=2)\n"
        "p = harness.realize(b, lr=0.1, batch_size=8, momentum=0.9, train_size=64,"
        " realization='batch')\n"
        "harness.at_step(p, p.updates - 1); harness.at_epoch(p, 2); harness.micro_batches(16, 5)\n"
        "import harness.app.convert\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(p.updates)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(8 + 2 * (64 // 16))


def test_the_torch_names_load_lazily_and_are_listed():
    assert {"PlanBatchSampler", "PlanLR"} <= set(dir(harness))
    assert set(harness.__all__) <= set(dir(harness))
    assert harness.PlanBatchSampler.__module__ == "harness.data.sampler"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = harness.nope  # type: ignore[attr-defined]


def test_every_public_name_has_a_docstring():
    for name in harness.__all__:
        assert getattr(harness, name).__doc__, name


def test_per_epoch_and_per_step_agree_with_the_plan():
    plan = _cifar()
    assert plan.updates == 60 * (N // 128) + 60 * (N // 640) + 40 * (N // 3200) + 40 * (N // 16000)
    first_of_60 = 60 * (N // 128)
    hp = harness.at_step(plan, first_of_60)
    assert (hp.epoch, hp.step_in_epoch, hp.batch_size, hp.lr, hp.momentum) == (60, 0, 640, 0.1, 0.9)
    assert harness.at_step(plan, first_of_60 - 1).batch_size == 128
    assert harness.at_epoch(plan, 60) == hp
    last = harness.at_step(plan, plan.updates - 1)
    assert (last.epoch, last.step_in_epoch, last.batch_size) == (199, N // 16000 - 1, 16000)
    for bad in (-1, plan.updates):
        with pytest.raises(IndexError):
            harness.at_step(plan, bad)


@given(
    epochs=st.integers(1, 12),
    batch=st.integers(1, 40),
    n=st.integers(40, 400),
    realization=st.sampled_from(["lr", "batch", "hybrid"]),
    drop_last=st.booleans(),
)
def test_at_step_walks_every_epoch_in_order(epochs, batch, n, realization, drop_last):
    milestones = tuple(m for m in (epochs // 3, 2 * epochs // 3) if m > 0)
    base = harness.BaseSchedule(epochs=epochs, milestones=tuple(sorted(set(milestones))), factor=2)
    plan = harness.realize(
        base,
        lr=1.0,
        batch_size=batch,
        momentum=0.0,
        train_size=n,
        realization=realization,
        batch_drops=1,
        b_max=n,
        drop_last=drop_last,
    )
    walked = [harness.at_step(plan, s) for s in range(plan.updates)]
    for epoch in range(epochs):
        mine = [h for h in walked if h.epoch == epoch]
        per = harness.updates_per_epoch(n, plan.phase_at(epoch).batch_size, drop_last)
        assert [h.step_in_epoch for h in mine] == list(range(per))
        if mine:
            assert mine[0] == harness.at_epoch(plan, epoch)


def test_micro_batches_is_the_ceiling_and_rejects_nonsense():
    assert harness.micro_batches(16000, 5120) == 4
    assert harness.micro_batches(5120, 5120) == 1
    assert harness.micro_batches(128, 5120) == 1
    with pytest.raises(ValueError):
        harness.micro_batches(128, 0)


def test_scaling_rules_give_the_papers_initial_batches():
    assert harness.scaled_batch_size(128, 0.1, 0.9, 0.5, 0.9) == pytest.approx(640)
    assert harness.scaled_batch_size(128, 0.1, 0.9, 0.5, 0.98) == pytest.approx(3200)
