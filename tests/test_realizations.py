"""The realization registry (harness.core.realizations): every entry complete, and a new
planned realization is one new file plus one registration, planned by the real `harness plan`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.config.schema import ScheduleSpec
from harness.core.realizations import (
    REALIZATIONS,
    REFERENCE,
    RealizationKind,
    Start,
    realization_names,
    register,
)
from harness.core.schedule import BaseSchedule, ScheduleError, realize
from harness.core.schedule_request import (
    DECIDED,
    SCHEDULE_FIELDS,
    ScheduleRequest,
    resolve_schedule,
)
from harness.train.decisions import DECISION_HOOKS

REPO = Path(__file__).resolve().parent.parent
REQUEST_FIELDS = {f.name for f in dataclasses.fields(ScheduleRequest)}
BASE = BaseSchedule(epochs=6, milestones=(2, 4), factor=4.0)
# A valid value of each realization field some decided realization requires.
EXAMPLE = {"lr_max": 1.0}

# The new realization of the test below: the batch takes the square root of each drop, the lr
# the rest (lr / B stays the lr realization's). One file: its `epochs` and its registration.
SQRT_BATCH = """
import math

from harness.core.realizations import RealizationKind, Start, floor_to_ghost, register


def epochs(curve, start: Start):
    out = []
    for epoch in range(curve.epochs):
        decay = curve.decay(epoch)
        batch = floor_to_ghost(start.batch_size * math.sqrt(decay), start.ghost)
        lr = start.lr * curve.warmup_factor(epoch) * batch / (start.batch_size * decay)
        out.append((lr, batch, start.momentum))
    return out


register(RealizationKind(
    name="sqrt_batch",
    summary="each drop: B times its square root, the lr takes the rest",
    title="sqrt batch",
    suite_name="sqrt_batch",
    epochs=epochs,
))
"""

SUITE = """
name: sqrt
dataset: {name: synthetic, train_size: 4096, test_size: 64}
models:
  m: {name: small_cnn, width: 4}
optimizers:
  sgd: {kind: momentum, lr: 0.1, momentum: 0.9}
schedule: {epochs: 6, milestones: [2, 4], factor: 4, batch_size: 32}
schedules:
  decaying_lr: {realization: lr}
  sqrt: {realization: sqrt_batch}
training: {ghost_batch_size: 16}
experiments:
  - {name: e, optimizers: [sgd], schedules: [decaying_lr, sqrt], seeds: [0]}
"""


@pytest.fixture
def registered() -> Iterator[None]:
    """SQRT_BATCH registered in this process, and taken out again."""
    namespace: dict[str, object] = {}
    exec(compile(SQRT_BATCH, "sqrt_batch.py", "exec"), namespace)
    try:
        yield
    finally:
        REALIZATIONS.pop("sqrt_batch", None)


@pytest.mark.parametrize("name", list(REALIZATIONS))
def test_every_registered_realization_is_complete(name: str) -> None:
    """Its words are there, its fields exist in the request and the suite schema, and it is
    either planned (a valid plan for the base, lr / B of the lr realization) or decided with a
    decision hook in train/."""
    kind = REALIZATIONS[name]
    assert kind.name == name and name.isidentifier()
    assert kind.summary and kind.title and kind.suite_name
    schema_fields = set(ScheduleSpec.model_fields)
    for field in (*kind.takes, *kind.requires):
        assert field in REQUEST_FIELDS, f"{name}: {field} is not a ScheduleRequest field"
        assert field in schema_fields, f"{name}: {field} is not a ScheduleSpec field"
        assert field in SCHEDULE_FIELDS, f"{name}: {field} is not in recipe.SCHEDULE_FIELDS"
    assert kind.titled({f: 1 for f in kind.takes})
    if not kind.planned:
        assert name in DECISION_HOOKS, f"{name}: decided in training, but no hook in train/"
        assert name in DECIDED, f"{name}: decided in training, but no builder in DECIDED"
        # Its rule, built from a start as a suite's would be, is a DecidedSchedule whose plan
        # before any decision starts at the start and stays within its bounds.
        needed = [f for f in kind.takes if f in kind.requires]
        assert set(needed) <= set(EXAMPLE), f"{name}: give EXAMPLE a value of {needed}"
        start = Start(
            lr=0.1, batch_size=32, momentum=0.9, b_max=256, ghost=16, warmup="lr",
            options={f: EXAMPLE[f] for f in needed},
        )  # fmt: skip
        rule = DECIDED[name](BASE, start, 4096, True)
        plan, (most, fewest) = rule.plan(), rule.bounds()
        assert plan.phases[0].batch_size == 32 and plan.phases[0].lr == pytest.approx(0.1)
        assert fewest.updates <= plan.updates <= most.updates
        assert rule.caption() and set(rule.options()) <= set(kind.takes)
        assert list(rule.decision_epochs()) and all(e > 0 for e in rule.decision_epochs())
        return
    assert name not in DECISION_HOOKS and name not in DECIDED
    assert kind.epochs is not None
    start = Start(
        lr=0.1, batch_size=32, momentum=0.9, b_max=256, ghost=16, warmup="lr",
        options={"batch_drops": 1},
    )  # fmt: skip
    values = kind.epochs(BASE, start)
    assert len(values) == BASE.epochs
    reference = REALIZATIONS[REFERENCE].epochs
    assert reference is not None
    for (lr, batch, m), (ref_lr, ref_batch, _) in zip(values, reference(BASE, start), strict=True):
        assert batch % 16 == 0 and batch >= 32 and m == 0.9
        assert math.isclose(lr / batch, ref_lr / ref_batch, rel_tol=1e-12)


def test_suite_names_titles_and_the_reference_are_distinct() -> None:
    kinds = list(REALIZATIONS.values())
    assert len({k.suite_name for k in kinds}) == len(kinds)
    assert len({k.title for k in kinds}) == len(kinds)
    assert REALIZATIONS[REFERENCE].planned


def test_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register(RealizationKind(name="lr", summary="x", title="x", suite_name="x"))


def test_an_unknown_realization_names_the_registered_ones() -> None:
    with pytest.raises(ScheduleError, match="is not one of lr, hybrid, batch, adaptive"):
        realize(BASE, lr=0.1, batch_size=32, momentum=0.9, train_size=4096, realization="x")


def test_a_new_realization_plans_through_the_registry_api(registered: None) -> None:
    assert "sqrt_batch" in realization_names(planned=True)
    plan = resolve_schedule(
        ScheduleRequest(
            base_lr=0.1, base_momentum=0.9, train_size=4096, epochs=6, milestones=(2, 4),
            factor=4.0, batch_size=32, ghost=16, realization="sqrt_batch",
        )
    ).plan  # fmt: skip
    assert [(p.start_epoch, p.batch_size) for p in plan.phases] == [(0, 32), (2, 64), (4, 128)]
    assert [p.lr for p in plan.phases] == pytest.approx([0.1, 0.05, 0.025])


def test_a_new_realization_is_one_file_and_one_registration(tmp_path: Path) -> None:
    """The real `harness plan`, in a fresh process that imported the file first."""
    (tmp_path / "sqrt_batch.py").write_text(textwrap.dedent(SQRT_BATCH))
    (tmp_path / "suite.yaml").write_text(SUITE)
    run = subprocess.run(
        [sys.executable, "-c", "import sqrt_batch; from harness.cli import main; main()",
         "plan", str(tmp_path / "suite.yaml"), "--json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{REPO}"},
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    cells = {c["schedule"]: c for c in json.loads(run.stdout)["cells"]}
    phases = cells["sqrt"]["phases"]
    assert cells["sqrt"]["realization"] == "sqrt_batch"
    assert [(p["start_epoch"], p["batch_size"]) for p in phases] == [(0, 32), (2, 64), (4, 128)]
    assert [p["lr"] for p in phases] == pytest.approx([0.1, 0.05, 0.025])
    # Without the file the name is refused: one line naming the field, exit 2.
    bare = subprocess.run(
        [sys.executable, "-m", "harness", "plan", str(tmp_path / "suite.yaml")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bare.returncode == 2
    assert "realization: 'sqrt_batch' is not one of lr, hybrid, batch, adaptive" in bare.stderr
    assert "Traceback" not in bare.stderr
