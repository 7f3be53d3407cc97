"""The adaptive realization (harness.core.adaptive): a batch that follows the measured B_simple.

The decision rule and the plans it gives are pure functions, property-tested on synthetic
measurements; a suite states the rule and plans its bounds; training records each decision in
the checkpoint and the curves, so a paused or killed cell resumes with the same batches (the
rerun equals an unbroken run exactly, float64) and tier 0 of the gate checks the applied
batches against the recorded decisions.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.gate_applied import compare_applied
from harness.app.jobs import train_job
from harness.config.suite import load_suite
from harness.core.adaptive import AdaptiveSchedule, choose_batch
from harness.core.decided import Decision, pooled_b_simple
from harness.core.execution import Execution
from harness.core.schedule import BaseSchedule, ScheduleError, realize
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.errors import UserError
from harness.results.store import read_curves, read_runs
from harness.train.loop import train_cell
from tests.conftest import run_cli, stop_after

BASE = BaseSchedule(epochs=10, milestones=(4, 7), factor=4.0)


def _rule(**kw) -> AdaptiveSchedule:
    args = dict(lr=0.1, batch_size=32, momentum=0.9, train_size=5000, b_max=1024, ghost=16)
    return AdaptiveSchedule(BASE, **{**args, **kw})


# --- the rule, on synthetic measurements -----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    b_simple=st.floats(0.01, 1e7) | st.just(math.nan) | st.just(math.inf) | st.just(-5.0),
    previous=st.sampled_from([32, 48, 160, 512, 1024]),
    target=st.floats(0.05, 50),
    grow_only=st.booleans(),
)
def test_the_chosen_batch_is_whole_ghost_batches_within_its_bounds(
    b_simple, previous, target, grow_only
):
    batch = choose_batch(
        b_simple, previous, initial=32, target=target, b_max=1024, ghost=16, grow_only=grow_only
    )
    assert batch % 16 == 0 and batch <= 1024
    assert batch >= (previous if grow_only else 32)
    if not (math.isfinite(b_simple) and b_simple > 0):
        assert batch == previous  # nothing measured: the batch stays
    else:
        wanted = target * b_simple
        low = previous if grow_only else 32
        if low + 8 <= wanted <= 1024 - 8:  # inside the clamp: the nearest ghost multiple
            assert abs(batch - wanted) <= 8


@settings(max_examples=200, deadline=None)
@given(a=st.floats(1, 1e5), b=st.floats(1, 1e5), previous=st.sampled_from([32, 256]))
def test_the_rule_is_monotone_in_the_measurement(a, b, previous):
    low, high = sorted((a, b))

    def pick(x):
        return choose_batch(x, previous, initial=32, target=1.0, b_max=1024, ghost=16)

    assert pick(low) <= pick(high)


def test_rounding_clamping_and_examples():
    assert choose_batch(100.0, 32, initial=32, target=1.0, b_max=1024, ghost=16) == 96
    assert choose_batch(104.0, 32, initial=32, target=1.0, b_max=1024, ghost=16) == 112
    assert choose_batch(100.0, 160, initial=32, target=1.0, b_max=1024, ghost=16) == 160
    assert (
        choose_batch(100.0, 160, initial=32, target=1.0, b_max=1024, ghost=16, grow_only=False)
        == 96
    )
    assert (
        choose_batch(5.0, 160, initial=32, target=1.0, b_max=1024, ghost=16, grow_only=False) == 32
    )
    assert choose_batch(1e300, 32, initial=32, target=1e6, b_max=1024, ghost=16) == 1024
    assert choose_batch(300.0, 32, initial=32, target=2.0, b_max=1024, ghost=16) == 608


def test_b_simple_over_several_epochs_is_the_ratio_of_the_means():
    assert pooled_b_simple([(100.0, 1.0), (300.0, 1.0)]) == 200.0
    assert pooled_b_simple([(100.0, 1.0), (300.0, 3.0)]) == 100.0  # not the mean of ratios
    assert pooled_b_simple([(100.0, 1.0), (math.nan, math.nan)]) == 100.0
    assert math.isnan(pooled_b_simple([]))
    assert math.isnan(pooled_b_simple([(100.0, -1.0)]))  # noise swamps the gradient


def test_the_lr_stays_until_b_max_then_takes_what_the_batch_leaves_of_the_decay():
    rule = _rule(b_max=256)  # B0 32, decay x4 at epochs 4 and 7: the schedule wants 128, 512
    plan = rule.plan([Decision(1, 100.0, 96), Decision(3, 5000.0, 256)])
    lrs = [plan.phase_at(e).lr for e in range(10)]
    batches = [plan.phase_at(e).batch_size for e in range(10)]
    assert batches == [32, 96, 96] + [256] * 7
    # Capped at epoch 3, ahead of the schedule (256 > 128): the lr stays until the schedule
    # wants more than 256 (512 from epoch 7), then lr0 x 256 / 512, as the batch realization.
    assert lrs == [0.1] * 7 + [0.1 * 256 / 512] * 3
    batch = realize(BASE, lr=0.1, batch_size=32, momentum=0.9, train_size=5000,
                    realization="batch", b_max=256, ghost=16)  # fmt: skip
    assert [batch.phase_at(e).lr for e in range(7, 10)] == lrs[7:]  # the same temperature
    # Never capped: the lr never falls, whatever the schedule wants.
    slow = rule.plan([Decision(2, 80.0, 80), Decision(8, 200.0, 192)])
    assert {p.lr for p in slow.phases} == {0.1}
    never = rule.plan()
    assert {p.lr for p in never.phases} == {0.1} and never.updates == 10 * (5000 // 32)
    # Capped late and below what the schedule wants: the lr takes the rest at once.
    late = rule.plan([Decision(8, 5000.0, 256)])
    assert [late.phase_at(e).lr for e in (7, 8, 9)] == [0.1, 0.1 * 256 / 512, 0.1 * 256 / 512]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 3000) | st.just(math.nan), min_size=9, max_size=9), st.booleans())
def test_any_trajectory_lies_between_the_bounds(measured, grow_only):
    rule = _rule(grow_only=grow_only)
    decisions: list[Decision] = []
    for epoch, b_simple in zip(rule.decision_epochs(), measured, strict=True):
        previous = decisions[-1].batch_size if decisions else rule.batch_size
        decisions.append(rule.decide(epoch, b_simple, previous))
    most, fewest = rule.bounds()
    assert fewest.updates <= rule.plan(decisions).updates <= most.updates


def test_decisions_a_rule_cannot_have_made_are_refused():
    rule = _rule(every=2)
    assert list(rule.decision_epochs()) == [2, 4, 6, 8]
    for bad in (
        [Decision(3, 1.0, 64)],  # not a decision epoch
        [Decision(2, 1.0, 40)],  # not a whole number of ghost batches
        [Decision(2, 1.0, 2048)],  # above b_max
        [Decision(2, 1.0, 256), Decision(4, 1.0, 128)],  # fell, where it only grows
        [Decision(4, 1.0, 64), Decision(2, 1.0, 64)],  # out of order
    ):
        with pytest.raises(ScheduleError) as err:
            rule.plan(bad)
        assert err.value.field == "decisions"


def test_the_rule_refuses_bad_fields_by_name():
    for kw, field in (
        ({"b_max": 8000}, "b_max"),
        ({"b_max": 1000}, "b_max"),
        ({"target": 0.0}, "target"),
        ({"every": 10}, "every"),
        ({"batch_size": 16}, "batch_size"),
    ):
        with pytest.raises(ScheduleError) as err:
            _rule(**kw)
        assert err.value.field == field, kw
    with pytest.raises(ScheduleError, match="decided while training"):
        realize(BASE, lr=0.1, batch_size=32, momentum=0.9, train_size=5000,
                realization="adaptive")  # fmt: skip


# --- a suite ---------------------------------------------------------------------------------

SUITE = """\
name: adaptive
dataset: {{name: synthetic, train_size: 512, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.9}}
schedule: {{epochs: 4, milestones: [2], factor: 4, batch_size: 32}}
schedules:
  decaying: {{realization: lr}}
  adaptive: {{realization: adaptive, {rule}}}
training: {{ghost_batch_size: 16, precision: fp64}}
execution: {{eval_batch_size: 64}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [decaying, adaptive], seeds: [0]}}
"""


def _suite(folder: Path, rule: str = "b_max: 256, target: 1.0") -> Path:
    path = folder / "adaptive.yaml"
    path.write_text(textwrap.dedent(SUITE.format(rule=rule)))
    return path


def test_a_suite_plans_an_adaptive_cell_with_its_bounds(tmp_path):
    suite = load_suite(_suite(tmp_path))
    cell = next(c for c in suite.cells if c.schedule_name == "adaptive")
    assert cell.schedule["target"] == 1.0 and cell.schedule["every"] == 1
    assert cell.schedule["grow_only"] is True
    decaying = next(c for c in suite.cells if c.schedule_name == "decaying")
    assert "target" not in decaying.schedule  # no other cell's id moved
    shown = run_cli("plan", str(tmp_path / "adaptive.yaml"), "--json")
    assert shown.returncode == 0, shown.stderr
    planned = {c["schedule"]: c for c in json.loads(shown.stdout)["cells"]}
    bounds = planned["adaptive"]["adaptive"]
    assert bounds["decision_epochs"] == [1, 2, 3] and bounds["b_max"] == 256
    assert bounds["updates_max"] == 4 * (512 // 32) == planned["adaptive"]["updates"]
    assert bounds["updates_min"] == 512 // 32 + 3 * (512 // 256)
    assert planned["decaying"]["adaptive"] is None
    text = run_cli("plan", str(tmp_path / "adaptive.yaml"))
    assert "Between 22 updates" in " ".join(text.stdout.split())


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ("target: 1.0", "b_max: adaptive needs b_max"),
        ("b_max: 256, every: 4", "every: 4: no decision before the last"),
        ("b_max: 256, target: -1", "target"),
        ("b_max: 100", "b_max: 100 is not a multiple of the ghost batch size 16"),
    ],
)
def test_a_bad_rule_is_one_line_naming_its_field(tmp_path, rule, field):
    with pytest.raises(UserError, match=field):
        load_suite(_suite(tmp_path, rule))
    result = run_cli("plan", str(tmp_path / "adaptive.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "schedules.adaptive" in result.stderr or "schedule." in result.stderr


def test_only_an_adaptive_schedule_takes_a_target(tmp_path):
    path = _suite(tmp_path)
    path.write_text(path.read_text().replace("{realization: lr}", "{realization: lr, every: 2}"))
    with pytest.raises(UserError, match=r"schedules\.decaying\.every: only an adaptive"):
        load_suite(path)


# --- training: decisions are data ------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(512, 64, seed=0), torch.device("cpu"))


def _job(tmp_path: Path):
    suite = load_suite(_suite(tmp_path))
    return train_job(next(c for c in suite.cells if c.schedule_name == "adaptive"))


EXECUTION = Execution(eval_batch_size=64)


def test_training_records_each_decision_and_follows_it(tmp_path, data):
    job = _job(tmp_path)
    result = train_cell(job, data, EXECUTION, tmp_path / "ck.pt")
    progress = result.progress
    assert [d.epoch for d in progress.decisions] == [1, 2, 3]
    curves = progress.curves
    assert curves[0].decided is None and curves[0].noise is not None
    for record, decision in zip(curves[1:], progress.decisions, strict=True):
        assert record.decided is not None
        assert record.decided.decision_batch_size == decision.batch_size == record.batch_size
        assert record.applied is not None
        assert record.applied.applied_batch_size == decision.batch_size
    # Each decision read the B_simple measured since the previous one (here: the last epoch).
    for before, decision in zip(curves, progress.decisions, strict=False):
        assert before.noise is not None
        assert decision.b_simple == pytest.approx(before.noise.noise_b_simple, rel=1e-12)
    assert progress.updates == job.plan_for(progress.decisions).updates
    assert any(d.batch_size > 32 for d in progress.decisions)  # it did grow


@pytest.mark.parametrize("steps", [5, 16, 21])  # in epoch 0, at its end, in epoch 1
def test_a_paused_cell_resumes_with_the_same_decisions_as_an_unbroken_run(tmp_path, data, steps):
    job = _job(tmp_path)
    unbroken = train_cell(job, data, EXECUTION, tmp_path / "one.pt").progress
    checkpoint = tmp_path / "two.pt"
    first = train_cell(job, data, EXECUTION, checkpoint, stop=stop_after(steps)).progress
    assert first.status == "paused" and first.epoch < 4
    second = train_cell(job, data, EXECUTION, checkpoint).progress
    assert second.status == "ok"
    assert second.decisions == unbroken.decisions
    keep = ["epoch", "updates", "lr", "batch_size", "train_loss", "test_loss", "test_acc"]
    a = pd.DataFrame([r.columns() for r in unbroken.curves])
    b = pd.DataFrame([r.columns() for r in second.curves])
    extra = ["decision_b_simple", "decision_batch_size", "noise_b_simple", "order_checksum"]
    pd.testing.assert_frame_equal(b[keep + extra], a[keep + extra])


def test_a_checkpoint_whose_decisions_do_not_fit_trains_from_scratch(tmp_path, data):
    job = _job(tmp_path)
    checkpoint = tmp_path / "ck.pt"
    first = train_cell(job, data, EXECUTION, checkpoint, stop=stop_after(20)).progress
    assert first.decisions
    state = torch.load(checkpoint, weights_only=True)
    assert state["progress"]["decisions"]
    state["progress"]["decisions"] = []  # the decision erased: its batches cannot follow
    torch.save(state, checkpoint)
    again = train_cell(job, data, EXECUTION, checkpoint).progress
    assert again.status == "ok" and "trained from scratch" in (again.error or "")
    assert again.error is not None and "decisions" in again.error


def test_tier_0_checks_the_applied_batches_against_the_recorded_decisions(tmp_path):
    suite = _suite(tmp_path)
    results = tmp_path / "results"
    done = run_cli("run", str(suite), "--results", str(results), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    curves = read_curves(results)
    runs = read_runs(results)
    adaptive = runs.loc[runs["schedule"] == "adaptive"].iloc[0]
    plan = json.loads(adaptive["plan"])
    assert sum(p["updates"] for p in plan) == adaptive["updates"] == adaptive["planned_updates"]
    labels = dict(zip(runs["cell_id"], runs["schedule"], strict=True))
    assert compare_applied(curves, curves, labels, "regen").ok
    forged = curves.copy()
    mine = (forged["cell_id"] == adaptive["cell_id"]) & (forged["epoch"] == 3)
    forged.loc[mine, "decision_batch_size"] = 9999
    result = compare_applied(curves, forged, labels, "regen")
    assert not result.ok
    moved = result.rows[result.rows["verdict"] == "moved"]
    assert list(moved["metric"]) == ["applied_batch_size vs decisions"]
    # The report shows the decisions.
    report = run_cli("report", str(results), "--out", str(tmp_path / "REPORT.md"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "REPORT.md").read_text()
    assert "Adaptive batch: the decisions" in text


def test_an_unbroken_checkpoint_holds_the_decisions_as_plain_data(tmp_path, data):
    job = _job(tmp_path)
    checkpoint = tmp_path / "ck.pt"
    train_cell(job, data, EXECUTION, checkpoint)
    state = torch.load(checkpoint, weights_only=True)  # nothing but plain containers
    decisions = state["progress"]["decisions"]
    assert [d["epoch"] for d in decisions] == [1, 2, 3]
    assert all(isinstance(d["batch_size"], int) for d in decisions)
