"""The schedule algebra: the paper's update counts and the invariants of every realization."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config.schema import ScheduleSpec
from harness.config.suite import load_suite
from harness.core.schedule import (
    BaseSchedule,
    Plan,
    ScheduleError,
    noise_scale,
    realize,
    updates_per_epoch,
)
from harness.core.schedule_request import SCHEDULE_DEFAULTS, ScheduleRequest, resolve_schedule
from harness.core.shapes import wrn_blocks
from tests.conftest import REPO, SUITES


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
        # Goyal et al.'s baseline, as Sec 5.3 counts it: 90 epochs at 8192, "~14000".
        "goyal-baseline/goyal/goyal_warmup": _by_hand(n, [(90, 8192)]),
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
        # Above the largest batch drawn (128 × 8 × 10^4 with b_max None; the core allows 10^8):
        # with 10^7 the core rightly refused a batch over the training set, now and then.
        "train_size": 100_000_000,
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


def _without_warmup(base: BaseSchedule) -> BaseSchedule:
    return BaseSchedule(
        epochs=base.epochs,
        shape=base.shape,
        milestones=base.milestones,
        factor=base.factor,
        min_multiplier=base.min_multiplier,
    )


@settings(max_examples=200, deadline=None)
@given(schedules(), st.sampled_from(["batch", "hybrid"]), st.integers(0, 4))
def test_warmup_stays_an_lr_ramp(cfg: dict, realization: str, k: int) -> None:
    """The batch realizes the decay only: B is what it is without warm-up, the lr ramps."""
    base = cfg["base"]
    if realization == "hybrid" and base.shape != "step":
        return
    warm = realize(realization=realization, batch_drops=k, **cfg)  # type: ignore[arg-type]
    cold_cfg = {**cfg, "base": _without_warmup(base)}
    cold = realize(realization=realization, batch_drops=k, **cold_cfg)  # type: ignore[arg-type]
    for e in range(base.epochs):
        w, c = warm.phase_at(e), cold.phase_at(e)
        assert w.batch_size == c.batch_size, e
        assert math.isclose(w.lr, c.lr * base.warmup_factor(e), rel_tol=1e-12), e
        if base.decay(e) == 1:  # warm-up before any decay: B0, lr0 times the ramp
            assert w.batch_size == cfg["batch_size"]
            assert math.isclose(w.lr, cfg["lr"] * base.warmup_factor(e), rel_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(schedules(), st.sampled_from(["lr", "batch"]), st.integers(1_000_000, 10_000_000))
def test_rounding_leaves_lr_over_b_and_drifts_g_only_by_one_minus_b_over_n(
    cfg: dict, warmup: str, n: int
) -> None:
    """After ghost rounding and caps, lr / B of the batch realization is the lr realization's
    lr / B0; the exact g differs only by (1 - B/N) / (1 - B0/N)."""
    cfg = {**cfg, "train_size": n}
    b0 = cfg["batch_size"]
    try:
        batch = realize(realization="batch", warmup=warmup, **cfg)  # type: ignore[arg-type]
    except ScheduleError as exc:  # an uncapped batch beyond N
        assert exc.field == "b_max" and cfg["b_max"] is None
        return
    plain = realize(realization="lr", **cfg)
    for e in range(cfg["base"].epochs):
        p, ref = batch.phase_at(e), plain.phase_at(e)
        assert math.isclose(p.lr / p.batch_size, ref.lr / b0, rel_tol=1e-12), e
        assert p.lr <= cfg["lr"] * (1 + 1e-9)
        drift = (1 - p.batch_size / n) / (1 - b0 / n)
        assert math.isclose(p.noise_scale, ref.noise_scale * drift, rel_tol=1e-12), e
        # g falls below the lr realization's by the fraction (B - B0) / (N - B0) < B / N.
        assert math.isclose(1 - drift, (p.batch_size - b0) / (n - b0), abs_tol=1e-12)
        assert -1e-12 <= 1 - drift < p.batch_size / n


def test_a_cosine_with_warmup_starts_at_b0_with_a_ramping_lr() -> None:
    base = BaseSchedule(epochs=20, shape="cosine", warmup_epochs=2)
    cfg = {"lr": 0.1, "batch_size": 128, "momentum": 0.9, "train_size": 50_000, "ghost": 128}
    plan = realize(base, realization="batch", **cfg)
    for e, ramp in enumerate([1 / 3, 2 / 3, 1.0]):
        # The cosine has barely started to fall: B0 still, the lr takes ramp and decay.
        assert plan.phase_at(e).batch_size == 128
        assert math.isclose(plan.phase_at(e).lr, 0.1 * ramp / base.decay(e), rel_tol=1e-12)
    sizes = [plan.phase_at(e).batch_size for e in range(20)]
    assert sizes == sorted(sizes) and sizes[-1] > 128
    # The documented option: warm-up by the batch, a larger batch at full lr first.
    old = realize(base, realization="batch", warmup="batch", **cfg)
    assert old.phases[0].batch_size == 384 and old.phases[0].lr == 0.1
    with pytest.raises(ScheduleError) as caught:
        realize(base, warmup="sideways", **cfg)  # type: ignore[arg-type]
    assert caught.value.field == "warmup"


# ---------------------------------------------------------------------------------------------
# Refusals: realize() and BaseSchedule check their input instead of repairing it


GOOD = {"lr": 0.1, "batch_size": 128, "momentum": 0.9, "train_size": 50_000, "ghost": 32}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"batch_size": 100}, "batch_size", "not a multiple of the ghost batch size 32"),
        ({"b_max": 64}, "b_max", "below the initial batch size 128"),
        ({"b_max": 200}, "b_max", "not a multiple of the ghost batch size"),
        ({"lr": math.inf}, "lr", "finite"),
        ({"lr": math.nan}, "lr", "finite"),
        ({"lr": 0.0}, "lr", "above 0"),
        ({"momentum": 1.0}, "momentum", "[0, 1)"),
        ({"train_size": 0}, "train_size", "whole number"),
        ({"ghost": 0}, "ghost", "whole number"),
        ({"batch_size": True}, "batch_size", "whole number"),
        ({"realization": "sideways"}, "realization", "not one of"),
        ({"realization": "hybrid", "batch_drops": -1}, "batch_drops", "0 or more"),
        ({"train_size": 100}, "batch_size", "exceeds the training set"),
        ({"realization": "batch", "train_size": 1000}, "b_max", "set b_max <= 1000"),
    ],
)
def test_realize_refuses_inconsistent_input(changes: dict, field: str, words: str) -> None:
    base = BaseSchedule(epochs=10, milestones=(5,), factor=10.0)
    with pytest.raises(ScheduleError, match=re.escape(words)) as caught:
        realize(base, **{**GOOD, **changes})
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_realize_refuses_the_example_of_the_issue() -> None:
    base = BaseSchedule(epochs=10, milestones=(5,), factor=10.0)
    with pytest.raises(ScheduleError) as caught:
        realize(
            base,
            lr=0.1,
            batch_size=100,
            momentum=0.9,
            train_size=1000,
            b_max=50,
            ghost=32,
            realization="batch",
        )
    assert caught.value.field == "batch_size"
    assert "use 96" in str(caught.value)


def test_hybrid_needs_a_step_shape() -> None:
    with pytest.raises(ScheduleError, match="step shape") as caught:
        realize(BaseSchedule(epochs=10, shape="cosine"), realization="hybrid", **GOOD)
    assert caught.value.field == "realization"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 10**11}, "epochs"),
        ({"epochs": 10, "milestones": (8, 4)}, "milestones"),
        ({"epochs": 10, "milestones": (0, 4)}, "milestones"),
        ({"epochs": 10, "milestones": (4, 10)}, "milestones"),
        ({"epochs": 10, "shape": "cosine", "milestones": (4,)}, "milestones"),
        ({"epochs": 10, "factor": 1.0}, "factor"),
        ({"epochs": 10, "factor": math.inf}, "factor"),
        ({"epochs": 10, "milestones": (1, 2, 3), "factor": 1e300}, "factor"),
        ({"epochs": 10, "warmup_epochs": 10}, "warmup_epochs"),
        ({"epochs": 10, "min_multiplier": 1.0}, "min_multiplier"),
        ({"epochs": 10, "shape": "linear"}, "shape"),
    ],
)
def test_base_schedule_refuses_broken_rules(kwargs: dict, field: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        BaseSchedule(**kwargs)
    assert caught.value.field == field


@settings(max_examples=300, deadline=None)
@given(
    epochs=st.integers(-2, 200),
    milestones=st.lists(st.integers(-2, 210), max_size=4).map(tuple),
    factor=st.floats(allow_nan=True, allow_infinity=True),
    shape=st.sampled_from(["step", "cosine"]),
    realization=st.sampled_from(["lr", "batch", "hybrid"]),
    lr=st.floats(allow_nan=True, allow_infinity=True),
    batch=st.integers(-1, 5000),
    b_max=st.one_of(st.none(), st.integers(-1, 100_000)),
    ghost=st.integers(0, 256),
    train_size=st.integers(0, 100_000),
    drops=st.integers(-1, 6),
)
def test_any_input_plans_or_raises_a_schedule_error(
    epochs, milestones, factor, shape, realization, lr, batch, b_max, ghost, train_size, drops
) -> None:
    """No input crashes, hangs or overflows: a consistent plan or a ScheduleError."""
    try:
        base = BaseSchedule(epochs=epochs, shape=shape, milestones=milestones, factor=factor)
        plan = realize(
            base,
            lr=lr,
            batch_size=batch,
            momentum=0.9,
            train_size=train_size,
            realization=realization,
            batch_drops=drops,
            b_max=b_max,
            ghost=ghost,
        )
    except ScheduleError:
        return
    assert plan.epochs == epochs and plan.updates > 0
    assert all(0 < p.lr <= lr and p.batch_size % ghost == 0 for p in plan.phases)
    assert all(p.batch_size <= train_size for p in plan.phases)


# ---------------------------------------------------------------------------------------------
# Resolution of a schedule request: defaults, scaling rules and their errors


def _request(**changes: object) -> ScheduleRequest:
    fields = {
        "base_lr": 0.1,
        "base_momentum": 0.9,
        "train_size": 50_000,
        "epochs": 200,
        "milestones": (60, 120, 160),
        "factor": 5.0,
        "base_batch_size": 128,
        "ghost": 128,
        **changes,
    }
    return ScheduleRequest(**fields)  # type: ignore[arg-type]


def test_scaling_rules_give_the_papers_batch_sizes() -> None:
    assert resolve_schedule(_request()).batch_size == 128
    assert resolve_schedule(_request(lr=0.5)).batch_size == 640  # B ∝ lr
    both = resolve_schedule(_request(lr=0.5, momentum=0.98))
    assert both.batch_size == 3200  # then B ∝ 1/(1-m)
    assert (both.lr, both.momentum) == (0.5, 0.98)
    stated = resolve_schedule(_request(lr=0.5, batch_size=256))
    assert stated.batch_size == 256  # a stated batch size wins over the rule


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"epochs": None}, "epochs", "required"),
        ({"realization": "hybrid"}, "batch_drops", "hybrid needs batch_drops"),
        ({"batch_drops": 1}, "batch_drops", "only a hybrid"),
        ({"momentum": 0.95, "base_momentum": None}, "momentum", "no momentum to change"),
        ({"lr": 0.15}, "batch_size", "B = 192, not a multiple"),
        ({"lr": 0.3, "base_batch_size": None}, "batch_size", "needs a base batch_size"),
        ({"base_batch_size": None}, "batch_size", "required"),
        ({"milestones": (60, 200)}, "milestones", "not before the last epoch"),
    ],
)
def test_resolution_errors_name_the_field(changes: dict, field: str, words: str) -> None:
    with pytest.raises(ScheduleError, match=words) as caught:
        resolve_schedule(_request(**changes))
    assert caught.value.field == field


def test_schedule_defaults_live_in_core_once() -> None:
    assert set(SCHEDULE_DEFAULTS) == set(ScheduleSpec.model_fields)
    assert all(v is None for v in ScheduleSpec().model_dump().values())
    resolved = resolve_schedule(_request(milestones=(), factor=10.0))
    assert resolved.as_dict()["shape"] == SCHEDULE_DEFAULTS["shape"] == "step"


def test_wrn_depth_rule() -> None:
    assert [wrn_blocks(d) for d in (10, 16, 28)] == [1, 2, 4]
    for bad in (4, 15, 17, True):
        with pytest.raises(ValueError, match="6n\\+4"):
            wrn_blocks(bad)


def test_core_imports_only_the_standard_library_and_errors() -> None:
    import ast
    import sys

    for path in sorted((REPO / "harness" / "core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                ok = top in sys.stdlib_module_names or top == "__future__"
                ok = ok or name == "harness.errors" or name.startswith("harness.core")
                assert ok, f"{path.name} imports {name}"
