"""The schedule algebra: the paper's update counts and the invariants of every realization."""

from __future__ import annotations

import math
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config.suite import load_suite
from harness.core.schedule import BaseSchedule, Plan, noise_scale, realize, updates_per_epoch
from tests.conftest import SUITES


def _counts(path: str) -> dict[str, tuple[int, str]]:
    suite = load_suite(SUITES / path)
    out = {}
    for cell in suite.cells:
        if cell.paper and cell.paper.updates:
            for label in (cell.label, *cell.aliases):
                out[label.rsplit("/", 1)[0]] = (cell.plan.updates, cell.paper.updates)
    return out


def _agrees(count: int, words: str) -> bool:
    """Read the paper's phrase as a claim about a count: ~X, under/below X, just over/under X."""
    number = int(re.search(r"\d+", words).group())  # type: ignore[union-attr]
    if words.startswith("~"):
        return abs(count - number) <= 0.05 * number
    if words.startswith("just under"):
        return 0.95 * number <= count < number
    if words.startswith("just over"):
        return number < count <= 1.05 * number
    if words.startswith(("under", "below")):
        return 0.8 * number <= count < number
    raise AssertionError(f"unknown phrase {words!r}")


def _by_hand(train_size: int, epochs_and_batches: list[tuple[int, int]]) -> int:
    return sum(e * (train_size // b) for e, b in epochs_and_batches)


def test_cifar_counts_match_the_paper():
    counts = _counts("cifar.yaml")
    expected = {
        # Sec 5.2, derived from the rule floor(N/B) per epoch with the paper's batch sizes.
        "sec5.2/momentum/decaying_lr": _by_hand(50000, [(200, 128)]),
        "sec5.2/momentum/increasing_batch": _by_hand(
            50000, [(60, 128), (60, 640), (40, 3200), (40, 16000)]
        ),
        "sec5.2/momentum/increased_lr": _by_hand(
            50000, [(60, 640), (60, 3200), (40, 5120), (40, 5120)]
        ),
        "sec5.2/momentum/increased_momentum": _by_hand(
            50000, [(60, 3200), (60, 5120), (40, 5120), (40, 5120)]
        ),
    }
    assert set(expected) <= set(counts)
    for label, (count, words) in counts.items():
        assert count == expected[label.replace("sec5.1", "sec5.2")], label
        assert _agrees(count, words), (label, count, words)
    assert [counts[label][1] for label in expected] == [
        "~80000",
        "~29000",
        "under 6500",
        "under 2500",
    ]


def test_imagenet_counts_match_the_paper():
    counts = _counts("imagenet.yaml")
    n = 1281167
    expected = {
        "sec5.3-fig6/momentum/decaying_lr": _by_hand(n, [(90, 8192)]),
        "sec5.3-fig6/momentum/increasing_batch": _by_hand(n, [(30, 8192), (60, 81920)]),
        "sec5.3-fig7/momentum/momentum_0.9": _by_hand(n, [(30, 8192), (60, 65536)]),
        "sec5.3-fig7/momentum/momentum_0.95": _by_hand(n, [(30, 16384), (60, 65536)]),
        "sec5.3-fig7/momentum/momentum_0.975": _by_hand(n, [(30, 32768), (60, 65536)]),
    }
    assert set(counts) == set(expected)
    for label, (count, words) in counts.items():
        assert count == expected[label], label
        assert _agrees(count, words), (label, count, words)


def test_sec52_batch_sizes_follow_the_scaling_rules():
    suite = load_suite(SUITES / "cifar.yaml")
    first = {c.schedule_name: c.plan.phases[0] for c in suite.cells if c.experiment == "sec5.2"}
    assert first["increased_lr"].batch_size == 640  # B ∝ lr: 128 * 0.5 / 0.1
    assert first["increased_momentum"].batch_size == 3200  # then B ∝ 1/(1-m): 640 * 0.1/0.02
    capped = next(c for c in suite.cells if c.schedule_name == "increased_momentum").plan
    # 3200 -> 16000 wanted, 5120 allowed: the lr takes the remaining 16000/5120.
    assert capped.phases[1].batch_size == 5120
    assert math.isclose(capped.phases[1].lr, 0.5 / (16000 / 5120))


def test_updates_per_epoch_drops_or_keeps_the_partial_batch():
    assert updates_per_epoch(50000, 128) == 390
    assert updates_per_epoch(50000, 128, drop_last=False) == 391
    assert updates_per_epoch(50000, 5000, drop_last=False) == 10


def test_noise_scale_is_the_papers_formula():
    assert math.isclose(noise_scale(0.1, 0.9, 128, 50000), 0.1 / 0.1 * (50000 / 128 - 1))


# ---------------------------------------------------------------------------------------------
# Properties of every realization of every base schedule


@st.composite
def schedules(draw: st.DrawFn) -> dict:
    epochs = draw(st.integers(2, 60))
    shape = draw(st.sampled_from(["step", "cosine"]))
    milestones: tuple[int, ...] = ()
    if shape == "step":
        milestones = tuple(sorted(draw(st.sets(st.integers(1, epochs - 1), max_size=4))))
    base = BaseSchedule(
        epochs=epochs,
        shape=shape,
        milestones=milestones,
        factor=draw(st.sampled_from([2.0, 2.5, 5.0, 10.0])),
        warmup_epochs=draw(st.integers(0, min(3, epochs - 1))),
        min_multiplier=draw(st.sampled_from([0.0, 0.01, 0.1])),
    )
    ghost = draw(st.sampled_from([1, 8, 32, 128]))
    batch = ghost * draw(st.integers(1, 8))
    b_max = draw(st.one_of(st.none(), st.integers(batch // ghost, 400).map(lambda k: k * ghost)))
    return {
        "base": base,
        "lr": draw(st.floats(1e-4, 3.0)),
        "batch_size": batch,
        "momentum": draw(st.sampled_from([0.0, 0.9, 0.98])),
        "ghost": ghost,
        "b_max": b_max,
        "train_size": 10_000_000,
        "drop_last": draw(st.booleans()),
    }


def _per_epoch(plan: Plan) -> list[tuple[float, int]]:
    return [(plan.phase_at(e).lr, plan.phase_at(e).batch_size) for e in range(plan.epochs)]


@settings(max_examples=200, deadline=None)
@given(schedules(), st.integers(0, 4))
def test_realizations_share_the_noise_scale(cfg: dict, k: int) -> None:
    """lr/(B(1-m)) is identical at every epoch: g in the B << N limit (the paper's eq. 5)."""
    m = cfg["momentum"]
    plans = {"lr": realize(realization="lr", **cfg), "batch": realize(realization="batch", **cfg)}
    if cfg["base"].shape == "step":
        plans["hybrid"] = realize(realization="hybrid", batch_drops=k, **cfg)
    reference = _per_epoch(plans["lr"])
    for name, plan in plans.items():
        for epoch, ((lr, b), (ref_lr, ref_b)) in enumerate(zip(_per_epoch(plan), reference)):
            temp, ref_temp = lr / (b * (1 - m)), ref_lr / (ref_b * (1 - m))
            assert math.isclose(temp, ref_temp, rel_tol=1e-9), (name, epoch)
            # The exact g differs only through the (1 - B/N) factor.
            g = plan.phase_at(epoch).noise_scale
            ref_g = plans["lr"].phase_at(epoch).noise_scale
            assert math.isclose(g, ref_g, rel_tol=2 * max(b, ref_b) / cfg["train_size"])


@settings(max_examples=200, deadline=None)
@given(schedules(), st.sampled_from(["lr", "batch", "hybrid"]), st.integers(0, 4))
def test_plans_are_consistent(cfg: dict, realization: str, k: int) -> None:
    if realization == "hybrid" and cfg["base"].shape != "step":
        return
    plan = realize(realization=realization, batch_drops=k, **cfg)  # type: ignore[arg-type]
    assert plan.phases[0].start_epoch == 0 and plan.epochs == cfg["base"].epochs
    for before, after in zip(plan.phases, plan.phases[1:]):
        assert before.end_epoch == after.start_epoch
        assert (before.lr, before.batch_size) != (after.lr, after.batch_size)
    for p in plan.phases:
        assert p.batch_size % cfg["ghost"] == 0
        assert p.batch_size >= cfg["batch_size"]
        if cfg["b_max"] is not None:
            assert p.batch_size <= cfg["b_max"]
        assert p.updates == p.epochs * updates_per_epoch(
            cfg["train_size"], p.batch_size, cfg["drop_last"]
        )
        assert p.lr <= cfg["lr"] * (1 + 1e-12)
    assert plan.updates == sum(
        updates_per_epoch(cfg["train_size"], plan.phase_at(e).batch_size, cfg["drop_last"])
        for e in range(plan.epochs)
    )
    assert plan.updates_before(plan.epochs) == plan.updates
    if realization == "lr":
        assert {p.batch_size for p in plan.phases} == {cfg["batch_size"]}


@settings(max_examples=100, deadline=None)
@given(schedules())
def test_uncapped_step_batch_realization_keeps_the_lr(cfg: dict) -> None:
    """The paper's 'increasing batch size': lr constant, B multiplied by the factor per drop."""
    base = cfg["base"]
    if base.shape != "step" or base.warmup_epochs or base.factor != int(base.factor):
        return
    plan = realize(realization="batch", **{**cfg, "b_max": None})
    assert {p.lr for p in plan.phases} == {cfg["lr"]}
    for e in range(base.epochs):
        drops = sum(m <= e for m in base.milestones)
        assert plan.phase_at(e).batch_size == cfg["batch_size"] * int(base.factor) ** drops
