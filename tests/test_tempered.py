"""The tempered realization (harness.core.tempered): the schedule's g kept, B from the meter.

Its rule on constructed measurements (g kept at every epoch whatever was decided, the step,
hysteresis, lr and allowance caps, the bounds), a suite that plans it through the real
`harness plan`, and a cell that trains, records its decisions, resumes with the same ones and
passes tier 0 of the gate through the real `harness run`.
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
from harness.core.decided import Decision
from harness.core.execution import Execution
from harness.core.schedule import BaseSchedule, ScheduleError
from harness.core.tempered import TemperedSchedule
from harness.data.cifar10 import synthetic_cifar10
from harness.data.device import DeviceData
from harness.results.store import read_curves, read_runs
from harness.train.loop import train_cell
from tests.conftest import run_cli, stop_after

BASE = BaseSchedule(epochs=10, milestones=(4, 7), factor=4.0)


def _rule(**kw) -> TemperedSchedule:
    args = dict(
        lr=0.1, batch_size=32, momentum=0.9, train_size=50_000, b_max=4096, lr_max=1.6, ghost=16
    )
    return TemperedSchedule(BASE, **{**args, **kw})


@settings(max_examples=200, deadline=None)
@given(readings=st.lists(st.floats(1.0, 1e6) | st.just(math.nan), min_size=9, max_size=9))
def test_g_is_the_schedules_at_every_epoch_whatever_was_decided(readings):
    """lr / B equals the decaying-lr realization's in every epoch (so does g, up to its
    (1 - B/N) factor), and lr never passes lr_max."""
    rule = _rule()
    decisions, previous = [], rule.batch_size
    for epoch, b_simple in zip(rule.decision_epochs(), readings, strict=False):
        decisions.append(rule.decide(epoch, b_simple, previous))
        previous = decisions[-1].batch_size
    plan = rule.plan(decisions)
    for epoch in range(BASE.epochs):
        phase = plan.phase_at(epoch)
        want = 0.1 / (32 * BASE.decay(epoch))
        assert phase.lr / phase.batch_size == pytest.approx(want, rel=1e-12)
        assert phase.lr <= rule.lr_max * (1 + 1e-12)
        assert phase.batch_size % 16 == 0 and 32 <= phase.batch_size <= 4096
    most, fewest = rule.bounds()
    assert fewest.updates <= plan.updates <= most.updates


def test_a_decision_is_bounded_smoothed_by_hysteresis_and_capped():
    rule = _rule(max_step=2.0, hysteresis=0.1)
    assert rule.decide(1, 1e6, 64).batch_size == 128  # at most x2
    assert rule.decide(1, 1.0, 64).batch_size == 32  # at most /2
    assert rule.decide(1, 68.0, 64).batch_size == 64  # a 6 % move is not made
    assert rule.decide(1, 80.0, 64).batch_size == 80  # 25 %: whole ghost batches
    assert rule.decide(1, math.nan, 64).batch_size == 64  # nothing measured: kept
    # The lr cap: at epoch 1 lr / B = 0.1 / 32, so lr_max 0.4 allows B <= 128.
    assert _rule(lr_max=0.4).decide(1, 1e6, 128).batch_size == 128
    assert _rule(lr_max=0.4, max_step=8).decide(1, 1e6, 64).batch_size == 128
    # After the first milestone (decay 4) the same cap allows four times the batch.
    assert _rule(lr_max=0.4, max_step=8).decide(5, 1e6, 64).batch_size == 512
    # Appendix A: N_lost = B / (1 - m) fits in one epoch of 50000: B <= 5000 at m = 0.9.
    assert _rule(b_max=8192, lr_max=1e3, max_step=1e3).ceiling(1) == 4992


def test_decisions_it_cannot_have_made_are_refused():
    rule = _rule()
    for bad in (
        [Decision(0, 1.0, 64)],  # epoch 0 decides nothing
        [Decision(2, 1.0, 40)],  # not whole ghost batches
        [Decision(2, 1.0, 16)],  # below two ghost batches
        [Decision(2, 1.0, 8192)],  # above b_max
        [Decision(4, 1.0, 64), Decision(2, 1.0, 64)],  # out of order
    ):
        with pytest.raises(ScheduleError) as err:
            rule.plan(bad)
        assert err.value.field == "decisions"
    made = rule.decide(1, 100.0, 32)
    with pytest.raises(ScheduleError, match="where the rule gives"):
        rule.check_rule([Decision(1, 100.0, made.batch_size + 16)])


def test_bad_fields_are_refused_by_name():
    for kw, field in (
        ({"lr_max": 0.05}, "lr_max"),  # below the initial lr
        ({"max_step": 1.0}, "max_step"),
        ({"hysteresis": 1.0}, "hysteresis"),
        ({"window": 0}, "window"),
        ({"every": 10}, "every"),
        ({"batch_size": 16}, "batch_size"),
    ):
        with pytest.raises(ScheduleError) as err:
            _rule(**kw)
        assert err.value.field == field, kw


# --- a suite, through the real command line ----------------------------------------------------

SUITE = """\
name: tempered
dataset: {{name: synthetic, train_size: 512, test_size: 64}}
models:
  small: {{name: small_cnn, width: 4}}
optimizers:
  momentum: {{kind: momentum, lr: 0.05, momentum: 0.5}}
schedule: {{epochs: 4, milestones: [2], factor: 4, batch_size: 32}}
schedules:
  decaying: {{realization: lr}}
  tempered: {{realization: tempered, {rule}}}
training: {{ghost_batch_size: 16, precision: fp64}}
execution: {{eval_batch_size: 64}}
experiments:
  - {{name: grid, optimizers: [momentum], schedules: [decaying, tempered], seeds: [0]}}
"""


def _suite(folder: Path, rule: str = "b_max: 256, lr_max: 0.4, window: 1") -> Path:
    path = folder / "tempered.yaml"
    path.write_text(textwrap.dedent(SUITE.format(rule=rule)))
    return path


def test_plan_shows_the_rule_and_its_bounds(tmp_path):
    shown = run_cli("plan", str(_suite(tmp_path)), "--json")
    assert shown.returncode == 0, shown.stderr
    cell = next(c for c in json.loads(shown.stdout)["cells"] if c["schedule"] == "tempered")
    rule = cell["adaptive"]
    assert rule["lr_max"] == 0.4 and rule["window"] == 1 and rule["decision_epochs"] == [1, 2, 3]
    assert rule["updates_min"] <= cell["updates"] <= rule["updates_max"]
    text = run_cli("plan", str(_suite(tmp_path)))
    assert "tempered: g follows the schedule" in text.stdout


def test_a_suite_without_lr_max_is_one_line_naming_it(tmp_path):
    result = run_cli("plan", str(_suite(tmp_path, "b_max: 256")))
    assert result.returncode == 2
    assert "lr_max" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def data() -> DeviceData:
    return DeviceData.from_arrays(synthetic_cifar10(512, 64, seed=0), torch.device("cpu"))


def _job(tmp_path: Path):
    suite = load_suite(_suite(tmp_path))
    return train_job(next(c for c in suite.cells if c.schedule_name == "tempered"))


def test_a_cell_follows_its_decisions_and_resumes_with_the_same_ones(tmp_path, data):
    job = _job(tmp_path)
    execution = Execution(eval_batch_size=64)
    unbroken = train_cell(job, data, execution, tmp_path / "one.pt").progress
    assert [d.epoch for d in unbroken.decisions] == [1, 2, 3]
    assert unbroken.updates == job.plan_for(unbroken.decisions).updates
    for record in unbroken.curves:  # g kept: lr / B is the decaying-lr realization's
        want = 0.05 / (32 * BASE_OF_SUITE.decay(record.epoch - 1))
        assert record.lr / record.batch_size == pytest.approx(want, rel=1e-12)
    checkpoint = tmp_path / "two.pt"
    first = train_cell(job, data, execution, checkpoint, stop=stop_after(21)).progress
    assert first.status == "paused"
    second = train_cell(job, data, execution, checkpoint).progress
    assert second.status == "ok" and second.decisions == unbroken.decisions
    keep = ["epoch", "updates", "lr", "batch_size", "train_loss", "decision_batch_size"]
    a = pd.DataFrame([r.columns() for r in unbroken.curves])[keep]
    b = pd.DataFrame([r.columns() for r in second.curves])[keep]
    pd.testing.assert_frame_equal(b, a)


BASE_OF_SUITE = BaseSchedule(epochs=4, milestones=(2,), factor=4.0)


def test_run_writes_its_decisions_and_tier_0_checks_them(tmp_path):
    results = tmp_path / "results"
    done = run_cli("run", str(_suite(tmp_path)), "--results", str(results), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    runs, curves = read_runs(results), read_curves(results)
    row = runs.loc[runs["schedule"] == "tempered"].iloc[0]
    plan = json.loads(row["plan"])
    assert sum(p["updates"] for p in plan) == row["updates"] == row["planned_updates"]
    labels = dict(zip(runs["cell_id"], runs["schedule"], strict=True))
    job = _job(tmp_path)
    assert compare_applied(curves, curves, labels, "regen", rules={row["cell_id"]: job.decided}).ok
    mine = curves["cell_id"] == row["cell_id"]
    assert curves.loc[mine, "decision_batch_size"].notna().sum() == 3
